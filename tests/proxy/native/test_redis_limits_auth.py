"""The redis front's flags: AUTH (`--redis-password-file`), backend passwords, and each of
the four `--native-max-*` limits, against real processes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path

import hiredis
import httpx
import pytest
import redis

from tests.proxy.native.redis_support import start_redis_proxy
from tests.proxy.native.test_redis_front import raw
from tests.support.control_cluster import parse_metric
from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    free_port,
    redis_url,
    require_binary,
    ringleader_argv,
    wait_until,
)

PASSWORD = "front secret 42"
BACKEND_PASSWORD = "backend-secret-77"


def test_auth_is_required_and_compared_exactly(procs: ProcessGroup, tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    _, port = start_redis_proxy(procs, [redis_url(procs.redis())],
                                "--redis-password-file", str(secret))  # fmt: skip
    assert raw(port, b"GET x\r\n") == b"-NOAUTH Authentication required.\r\n"
    assert raw(port, b"PING\r\n") == b"-NOAUTH Authentication required.\r\n"
    wrong = redis.Redis(host=LOOPBACK, port=port, password=PASSWORD[:-1], socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    right = redis.Redis(host=LOOPBACK, port=port, password=PASSWORD, socket_timeout=5)
    assert right.set("k", "v") is True
    assert right.get("k") == b"v"
    as_default = redis.Redis(host=LOOPBACK, port=port, username="default", password=PASSWORD)
    assert as_default.get("k") == b"v"
    hello = b"*5\r\n$5\r\nHELLO\r\n$1\r\n2\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$15\r\n%s\r\n" % (
        PASSWORD.encode()
    )
    reply = raw(port, hello + b"*1\r\n$4\r\nPING\r\n", until=b"+PONG\r\n")
    assert reply.startswith(b"*14\r\n")
    assert reply.endswith(b"+PONG\r\n")


def test_backend_passwords_are_used_and_never_shown(procs: ProcessGroup, tmp_path: Path) -> None:
    servers = []
    for _ in range(2):
        port = free_port()
        argv = [require_binary("redis-server"), "--bind", LOOPBACK, "--port", str(port),
                "--save", "", "--appendonly", "no", "--requirepass", BACKEND_PASSWORD]  # fmt: skip
        servers.append(procs.spawn("redis", argv, port).wait_port())
    secret = tmp_path / "backend-password"
    secret.write_text(BACKEND_PASSWORD + "\n")
    urls = [
        f"redis://:{BACKEND_PASSWORD}@{LOOPBACK}:{servers[0].port}/0?name=inline",
        f"redis://{LOOPBACK}:{servers[1].port}/0?name=filed&password_file={secret}",
    ]
    proxy, port = start_redis_proxy(procs, urls, http=True)
    r = redis.Redis(host=LOOPBACK, port=port, socket_timeout=5)
    keys = [f"pw-{i}" for i in range(40)]
    assert r.mset(dict.fromkeys(keys, "v")) is True
    assert r.mget(keys) == [b"v"] * 40
    for server in servers:
        direct = redis.Redis(host=LOOPBACK, port=server.port, password=BACKEND_PASSWORD)
        assert direct.dbsize() > 0

    def probed_up() -> bool:
        status = httpx.get(proxy.admin_url + "/status", timeout=5).json()
        return all(b["state"] == "up" for b in status["backends"])

    # The heartbeats authenticate too. Their first verdict can come after the traffic
    # above: a probe that missed the 0.25 s health timeout on a loaded machine is no
    # verdict yet, either way.
    wait_until(probed_up, 10, "both backends probed up")
    status = httpx.get(proxy.admin_url + "/status", timeout=5)
    metrics = httpx.get(proxy.admin_url + "/metrics", timeout=5).text
    for shown in (status.text, metrics, proxy.process.log_tail(1000), r.info("proxy").__repr__()):
        assert BACKEND_PASSWORD not in shown
    assert f"password_file={secret}" in status.text
    # A CLI error about a URL with a password shows the URL without it.
    bad = f"redis://:{BACKEND_PASSWORD}@{LOOPBACK}:1/0?weight=heavy"
    done = subprocess.run([*ringleader_argv(), "proxy", "--backend", bad],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert "weight must be" in done.stderr
    assert BACKEND_PASSWORD not in done.stderr
    assert ":***@" in done.stderr


@pytest.fixture
def limited(procs: ProcessGroup) -> int:
    """A one-worker proxy with small limits; its redis port."""
    _, port = start_redis_proxy(procs, [redis_url(procs.redis())], "--workers", "1",
                                "--native-max-request-bytes", "1000",
                                "--native-max-keys", "5")  # fmt: skip
    return port


def test_max_request_bytes(limited: int) -> None:
    r = redis.Redis(host=LOOPBACK, port=limited, socket_timeout=5)
    assert r.set("small", "x" * 900) is True
    with pytest.raises(redis.ResponseError, match="request over 1000 bytes"):
        r.set("big", "x" * 2000)
    assert r.get("big") is None
    # Still arriving past the limit: nothing can say where the next command starts, so the
    # proxy answers and closes.
    head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n"
    reply = raw(limited, head + b"x" * 5000, until=b"\x00never")
    assert reply.startswith(b"-ERR Protocol error: request over 1000 bytes"), reply
    assert r.get("small") == b"x" * 900


def test_max_keys(limited: int) -> None:
    r = redis.Redis(host=LOOPBACK, port=limited, socket_timeout=5)
    five = [f"k{i}" for i in range(5)]
    assert r.mset(dict.fromkeys(five, "v")) is True
    assert r.mget(five) == [b"v"] * 5
    for call in (lambda: r.mget([*five, "k5"]), lambda: r.delete(*five, "k5"),
                 lambda: r.mset(dict.fromkeys([*five, "k5"], "v"))):  # fmt: skip
        with pytest.raises(redis.ResponseError, match="6 keys, more than 5"):
            call()
    assert r.exists(*five) == 5


def test_max_connections(procs: ProcessGroup) -> None:
    proxy, limited = start_redis_proxy(procs, [redis_url(procs.redis())], "--workers", "1",
                                       "--native-max-connections", "3")  # fmt: skip
    clients = [socket.create_connection((LOOPBACK, limited), timeout=5) for _ in range(3)]
    try:
        for sock in clients:
            sock.sendall(b"PING\r\n")
            assert sock.recv(100) == b"+PONG\r\n"
        assert raw(limited, b"PING\r\n", until=b"\x00never") == (
            b"-ERR max number of clients reached\r\n"
        )
        clients.pop().close()
        wait_until(lambda: raw(limited, b"PING\r\n") == b"+PONG\r\n", 10, "a freed slot")
        refused = {"front": "redis"}
        wait_until(lambda: parse_metric(httpx.get(proxy.admin_url + "/metrics").text,
                                        "ringleader_proxy_connections_refused_total",
                                        refused) >= 1, 10, "the refusal counted")  # fmt: skip
    finally:
        for sock in clients:
            sock.close()


class HoldingRedis:
    """A redis stand-in that answers PING at once (the proxy's heartbeat) and holds every
    other command's reply until `release()`; it counts the commands it has received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self._held: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, LOOPBACK, self.port)
        )
        started.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                if command[0].upper() == b"PING":
                    writer.write(b"+PONG\r\n")
                else:
                    self.received += 1
                    self._held.append(writer)

    def release(self) -> None:
        def answer() -> None:
            for writer in self._held:
                writer.write(b"$-1\r\n")
            self._held.clear()

        self._loop.call_soon_threadsafe(answer)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_max_pipeline_pauses_reading(procs: ProcessGroup) -> None:
    backend = HoldingRedis()
    try:
        url = f"redis://{LOOPBACK}:{backend.port}/0?name=holding"
        _, port = start_redis_proxy(procs, [url], "--workers", "1", "--native-max-pipeline", "4",
                                    "--request-timeout", "30")  # fmt: skip
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            sock.sendall(b"GET k\r\n" * 10)
            wait_until(lambda: backend.received == 4, 10, "the first 4 commands")
            # Reading is paused: nothing more reaches the backend until replies go out.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert backend.received == 4
                time.sleep(0.05)
            for expected in (8, 10):
                backend.release()
                wait_until(lambda n=expected: backend.received == n, 10, f"{expected} commands")  # type: ignore[misc]
            backend.release()
            data = b""
            while len(data) < 50:
                data += sock.recv(100)
            assert data == b"$-1\r\n" * 10
    finally:
        backend.close()
