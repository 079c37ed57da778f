"""The data port's HTTP server against the alternatives, one worker process each, the same
trivial raw-ASGI app (a 100-byte body), on this machine in one run: our proxy/httpserver.py
(uvloop), uvicorn (httptools, uvloop), granian (ASGI, and RSGI for its ceiling) and
hypercorn (uvloop). Then each server's limits and framing, probed with raw sockets.

    python -m bench.http_servers [--seconds 10] [--rounds 2] [--connections 32]
    python -m bench.http_servers --instructions    # ours vs uvicorn, valgrind, noise-free

granian and hypercorn are not project dependencies: `pip install granian hypercorn`.
Throughput rounds alternate between the servers, so drift on a shared machine hits them
alike; CPU per request is the server process tree's utime+stime over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.common import require, table, wrk
from proxy.asgi import Receive, Scope, Send
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port

BODY = b"v" * 100
HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"100")]
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
SLOWLORIS_WINDOW = 35.0  # above granian's 30 s default header read timeout


# -- the app ----------------------------------------------------------------------------------


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":  # hypercorn and granian run it
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope.get("raw_path") or scope["path"].encode()
    if path == b"/999":
        await send({"type": "http.response.start", "status": 999, "headers": []})
        await send({"type": "http.response.body", "body": b"odd"})
    elif path == b"/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hel", "more_body": True})
        await send({"type": "http.response.body", "body": b"lo"})
    elif path == b"/both":
        headers = [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hel", "more_body": True})
        await send({"type": "http.response.body", "body": b"lo"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})


async def rsgi_app(scope: Any, proto: Any) -> None:
    proto.response_bytes(
        200, [("content-type", "application/octet-stream"), ("content-length", "100")], BODY
    )


def serve_ours(port: int, max_connections: int) -> None:
    from proxy.httpserver import Server

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(2048)
    uvloop.run(Server(app, max_connections=max_connections).serve(sock))


# -- the servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    name: str
    argv: Callable[[int], list[str]]
    limit_argv: Callable[[int], list[str]] | None  # with a connection limit of 4, if any
    probed: bool = True  # in the limits table


def _granian(interface: str, target: str, *extra: str) -> Callable[[int], list[str]]:
    return lambda port: [
        require("granian"), "--interface", interface, "--host", LOOPBACK, "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--no-ws", "--no-access-log",
        "--log-level", "warning", *extra, target,
    ]  # fmt: skip


def _uvicorn(*extra: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable, "-m", "uvicorn", "bench.http_servers:app", "--host", LOOPBACK,
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
        "--no-access-log", "--log-level", "warning", "--no-server-header", "--no-date-header",
        *extra,
    ]  # fmt: skip


def _hypercorn(port: int) -> list[str]:
    return [
        require("hypercorn"), "-k", "uvloop", "-w", "1", "-b", f"{LOOPBACK}:{port}",
        "--log-level", "warning", "bench.http_servers:app",
    ]  # fmt: skip


def _ours(limit: int) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", "bench.http_servers", "serve", str(port), str(limit)]


CONTENDERS = [
    Contender("ours (proxy/httpserver.py, uvloop)", _ours(1024), _ours(4)),
    Contender("uvicorn (httptools, uvloop)", _uvicorn(), _uvicorn("--limit-concurrency", "4")),
    Contender(
        "granian ASGI",
        _granian("asgi", "bench.http_servers:app"),
        _granian("asgi", "bench.http_servers:app", "--backpressure", "4"),
    ),
    Contender("granian RSGI", _granian("rsgi", "bench.http_servers:rsgi_app"), None, False),
    Contender("hypercorn (uvloop)", _hypercorn, None),
]


def start(group: ProcessGroup, argv: Callable[[int], list[str]], name: str) -> ServerProcess:
    port = free_port()
    proc = group.spawn(name.split()[0], argv(port), port).wait_port()
    # Readiness: a whole response, not just an open port (granian and hypercorn fork).
    deadline = time.monotonic() + 15
    while not exchange(
        port, b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    ).endswith(BODY):
        if time.monotonic() > deadline:
            sys.exit(f"bench: {name} does not answer:\n{proc.log_tail()}")
        time.sleep(0.05)
    return proc


def stop(proc: ServerProcess) -> None:
    """Kills the server's whole process group: granian's worker outlives its parent."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.popen is not None:
        proc.popen.wait(10)


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its descendants."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


# -- raw probes -------------------------------------------------------------------------------


def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(request)
            return read_all(sock, timeout)
    except OSError:
        return b""


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def status_of(raw: bytes) -> str:
    if not raw:
        return "closed, no answer"
    return raw.split(b"\r\n", 1)[0].decode(errors="replace").removeprefix("HTTP/1.1 ")


def head_of(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")[1:]


def big_head(port: int, size: int) -> str:
    """What a GET with one `size`-byte header gets, sent whole."""
    request = (
        b"GET / HTTP/1.1\r\nHost: bench\r\nX-Big: " + b"h" * size + b"\r\nConnection: close\r\n\r\n"
    )
    try:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            with contextlib.suppress(OSError):  # the server may refuse before the end
                sock.sendall(request)
            return status_of(read_all(sock, 10))
    except OSError as exc:
        return f"error {exc.__class__.__name__}"


def slowloris(port: int, window: float, out: dict[str, str], key: str) -> None:
    """Trickles a head one byte a second; when does the server give up on it?"""
    began = time.monotonic()
    try:
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
            sock.settimeout(1.0)
            while time.monotonic() - began < window:
                try:
                    answer = sock.recv(200)
                except TimeoutError:
                    sock.sendall(b"s")
                    continue
                elapsed = time.monotonic() - began
                what = status_of(answer) if answer else "closed, no answer"
                out[key] = f"{what} after {elapsed:.1f} s"
                return
    except (ConnectionResetError, BrokenPipeError):
        out[key] = f"reset after {time.monotonic() - began:.1f} s"
        return
    out[key] = f"still open after {window:.0f} s"


def framing(port: int) -> str:
    """Responses to an app passing both Content-Length and chunked, and a streamed body
    without Content-Length: both framings in one response, or a malformed message?"""
    notes = []
    for path in ("/both", "/stream"):
        raw = exchange(
            port, f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
        )
        head = head_of(raw)
        has_cl = any(line.startswith(b"content-length:") for line in head)
        has_te = any(line.startswith(b"transfer-encoding:") for line in head)
        if not raw:
            notes.append(f"{path}: no answer")
        elif has_cl and has_te:
            notes.append(f"{path}: BOTH")
        else:
            notes.append(f"{path}: {'CL' if has_cl else 'chunked' if has_te else 'neither'}")
    return ", ".join(notes)


def connection_limit(port: int) -> str:
    """Four keep-alive connections (the configured limit), then a fifth."""
    held = []
    try:
        for count in range(1, 5):
            sock = socket.create_connection((LOOPBACK, port), timeout=5)
            held.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while not data.endswith(BODY):
                chunk = sock.recv(65536)
                if not chunk:
                    return f"connection {count} of 4: {status_of(data)}"
                data += chunk
        return "5th: " + status_of(exchange(port, CLOSE_REQUEST))
    except OSError as exc:
        return f"error {exc.__class__.__name__}"
    finally:
        for sock in held:
            sock.close()


# -- instructions per request (deterministic) -------------------------------------------------


class _FakeTransport(asyncio.Transport):
    """Counts writes; everything else the protocols ask of a transport is a no-op."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return None if name == "socket" else (LOOPBACK, 5555)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


DRIVEN_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


def drive(which: str, requests: int) -> None:
    """`requests` keep-alive GETs through one connection's protocol object, no sockets."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        protocol: asyncio.Protocol
        if which in ("ours", "loop"):
            from proxy.httpserver import Server, _Connection

            protocol = _Connection(Server(app), loop)
        elif which == "uvicorn":
            from uvicorn.config import Config
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
            from uvicorn.server import ServerState

            config = Config(app, http="httptools", lifespan="off", access_log=False,
                            server_header=False, date_header=False, log_config=None)  # fmt: skip
            config.load()
            protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        transport = _FakeTransport()
        protocol.connection_made(transport)
        for _ in range(requests):
            if which != "loop":
                protocol.data_received(DRIVEN_REQUEST)
            await asyncio.sleep(0)  # the app's task runs
        assert which == "loop" or transport.writes >= requests

    uvloop.run(run())


def instructions_per_request(which: str) -> float:
    """Instructions (valgrind) per request: the difference between 3000 and 1000 requests."""
    counts = []
    for requests in (1000, 3000):
        out = subprocess.run(
            [require("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, "-m", "bench.http_servers", "drive", which, str(requests)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        ).stderr  # fmt: skip
        match = re.search(r"Collected : (\d+)", out)
        if match is None:
            sys.exit(f"bench: cannot parse callgrind output:\n{out}")
        counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) / 2000


def instructions() -> None:
    loop = instructions_per_request("loop")
    rows: list[tuple[str, ...]] = []
    results = {which: instructions_per_request(which) - loop for which in ("ours", "uvicorn")}
    for which, count in results.items():
        rows.append((which, f"{count:,.0f}", f"{count / results['ours']:.2f}"))
    print(
        "Instructions per keep-alive GET in the server process's Python side (valgrind "
        "callgrind; parsing, scope, task, app, response; no sockets, the event loop's own "
        f"per-iteration cost of {loop:,.0f} subtracted)\n"
    )
    print(table(rows, ("protocol", "instructions/request", "vs ours")))


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--slowloris", type=float, default=SLOWLORIS_WINDOW, help="seconds")
    args = parser.parse_args()
    for tool in ("wrk", "granian", "hypercorn"):
        require(tool)
    group = ProcessGroup(Path(tempfile.mkdtemp(prefix="ringleader-bench-")))
    try:
        procs = {c.name: start(group, c.argv, c.name) for c in CONTENDERS}
        rps: dict[str, list[float]] = {c.name: [] for c in CONTENDERS}
        cpu: dict[str, list[float]] = {c.name: [] for c in CONTENDERS}
        for c in CONTENDERS:  # warm-up
            wrk(f"http://{LOOPBACK}:{procs[c.name].port}/", 1, args.connections)
        for _ in range(args.rounds):
            for c in CONTENDERS:
                proc = procs[c.name]
                before = tree_cpu_seconds(proc.pid)
                result = wrk(f"http://{LOOPBACK}:{proc.port}/", args.seconds, args.connections)
                used = tree_cpu_seconds(proc.pid) - before
                rps[c.name].append(result["rps"])
                cpu[c.name].append(used / (result["rps"] * args.seconds) * 1e6)
        ours = statistics.mean(rps[CONTENDERS[0].name])
        rows = [
            (
                c.name,
                *(f"{r:,.0f}" for r in rps[c.name]),
                f"{statistics.mean(rps[c.name]):,.0f}",
                f"{statistics.mean(rps[c.name]) / ours:.2f}",
                f"{statistics.mean(cpu[c.name]):.1f}",
            )
            for c in CONTENDERS
        ]
        rounds = tuple(f"round {i + 1} req/s" for i in range(args.rounds))
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s, GET answered with a 100-byte body, "
            f"one worker process each, {args.rounds} alternating rounds\n"
        )
        print(table(rows, ("server", *rounds, "mean req/s", "vs ours", "CPU us/request")))

        probed = [c for c in CONTENDERS if c.probed]
        checks: dict[str, dict[str, str]] = {c.name: {} for c in probed}
        slow: dict[str, str] = {}
        trickles = [
            threading.Thread(
                target=slowloris, args=(procs[c.name].port, args.slowloris, slow, c.name)
            )
            for c in probed
        ]
        for thread in trickles:
            thread.start()
        for c in probed:
            port = procs[c.name].port
            checks[c.name]["40 KiB head"] = big_head(port, 40 * 1024)
            checks[c.name]["1 MiB head"] = big_head(port, 1024 * 1024)
            checks[c.name]["status 999"] = status_of(
                exchange(port, b"GET /999 HTTP/1.1\r\nHost: bench\r\n\r\n")
            )
            checks[c.name]["framing"] = framing(port)
        for thread in trickles:
            thread.join()
        for c in CONTENDERS:
            stop(procs[c.name])
        for c in probed:
            checks[c.name]["slowloris"] = slow.get(c.name, "?")
            if c.limit_argv is None:
                checks[c.name]["connection limit"] = "no option"
            else:
                limited = start(group, c.limit_argv, c.name)
                checks[c.name]["connection limit"] = connection_limit(limited.port)
                stop(limited)
        print(
            "\nLimits and framing, probed with raw sockets (servers at their defaults; the "
            "connection limit set to 4 where there is an option)\n"
        )
        labels = {
            "40 KiB head": "40 KiB request head (32 KiB is our limit)",
            "1 MiB head": "1 MiB request head",
            "slowloris": f"head trickled 1 byte/s (for up to {args.slowloris:.0f} s)",
            "status 999": "app answers status 999",
            "framing": "app passes CL + chunked (/both); streams (/stream)",
            "connection limit": "connection limit (4 open, then a 5th)",
        }
        rows = [(label, *(checks[c.name][key] for c in probed)) for key, label in labels.items()]
        print(table(rows, ("check", *(c.name for c in probed))))
    finally:
        for proc in group.processes:
            stop(proc)
        group.cleanup()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve_ours(int(sys.argv[2]), int(sys.argv[3]))
elif __name__ == "__main__" and sys.argv[1:2] == ["drive"]:
    drive(sys.argv[2], int(sys.argv[3]))
elif __name__ == "__main__" and sys.argv[1:2] == ["--instructions"]:
    instructions()
elif __name__ == "__main__":
    if shutil.which("granian") is None:  # run as .venv/bin/python without an activated venv
        os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    main()
