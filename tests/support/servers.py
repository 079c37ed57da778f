"""Real server processes for integration tests: memcached, redis-server, nutcracker and
`ringleader` itself, on free loopback ports.

Every process is started by PID and ended by PID (SIGKILL at teardown if still running).
Readiness is polled with a deadline, never slept for.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
STARTUP_DEADLINE = 15.0


def _below_ephemeral() -> range:
    """Ports the kernel never picks as the local end of an outgoing connection."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(10000, low)


# A port from the ephemeral range can be taken, between our choosing it and a server
# binding it, as the local end of some outgoing connection: a node reconnecting to a peer
# that is not up yet. Servers get ports from below that range instead, each at most once.
_SERVER_PORTS = _below_ephemeral()
_handed_out: set[int] = set()
_port_choice = random.Random()


def free_port() -> int:
    for _ in range(200 if len(_SERVER_PORTS) > 1000 else 0):
        port = _port_choice.choice(_SERVER_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; .ci/run installs it (apt-get install)")
    return path


@dataclass
class ServerProcess:
    """One child process we own."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.popen = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_port(self, timeout: float = STARTUP_DEADLINE) -> ServerProcess:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            return port_open(self.port)

        wait_until(ready, timeout, f"{self.name} on port {self.port}")
        return self

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            assert self.popen is not None
            self.popen.wait(10)

    def stop(self) -> None:
        self.signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.popen is not None
        if self.alive():
            self.signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ProcessGroup:
    """Starts processes for one test and kills whatever is left at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ServerProcess] = []

    def spawn(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None
    ) -> ServerProcess:
        proc = ServerProcess(name, argv, port, self.workdir / f"{name}-{port}.log", env)
        self.processes.append(proc.start())
        return proc

    def memcached(self, port: int | None = None, memory_mb: int = 64) -> ServerProcess:
        port = port or free_port()
        argv = [require_binary("memcached"), "-l", LOOPBACK, "-p", str(port), "-U", "0",
                "-m", str(memory_mb), "-t", "1"]  # fmt: skip
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        return self.spawn("memcached", argv, port).wait_port()

    def redis(self, port: int | None = None) -> ServerProcess:
        port = port or free_port()
        argv = [require_binary("redis-server"), "--bind", LOOPBACK, "--port", str(port),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        return self.spawn("redis", argv, port).wait_port()

    def nutcracker(
        self, servers: Sequence[str], hash_name: str = "fnv1a_64", *,
        redis: bool = False, hash_tag: str | None = None,
    ) -> ServerProcess:  # fmt: skip
        """twemproxy with `distribution: ketama`; `servers` are `host:port:weight [name]`,
        memcached servers unless `redis`."""
        port = free_port()
        conf = self.workdir / f"nutcracker-{port}.yml"
        lines = [
            "pool:",
            f"  listen: {LOOPBACK}:{port}",
            f"  hash: {hash_name}",
            "  distribution: ketama",
            *([f'  hash_tag: "{hash_tag}"'] if hash_tag is not None else []),
            *(["  redis: true"] if redis else []),
            "  auto_eject_hosts: false",
            "  timeout: 2000",
            "  servers:",
            *(f"   - {s}" for s in servers),
        ]
        conf.write_text("\n".join(lines) + "\n")
        argv = [require_binary("nutcracker"), "-c", str(conf), "-s", str(free_port()),
                "-o", str(self.workdir / f"nutcracker-{port}.out")]  # fmt: skip
        return self.spawn("nutcracker", argv, port).wait_port()

    def ringleader(
        self, args: Sequence[str], port: int, name: str = "ringleader",
        env: dict[str, str] | None = None,
    ) -> ServerProcess:  # fmt: skip
        """A `ringleader` subcommand, run from this interpreter's environment."""
        return self.spawn(name, [*ringleader_argv(), *args], port, env)

    def proxy(self, backends: Sequence[str], *extra: str) -> Proxy:
        listen, admin = free_port(), free_port()
        args = ["proxy", "--listen", f"{LOOPBACK}:{listen}", "--admin", f"{LOOPBACK}:{admin}"]
        for url in backends:
            args += ["--backend", url]
        proc = self.ringleader([*args, *extra], listen, name="proxy")
        proxy = Proxy(proc, f"http://{LOOPBACK}:{listen}", f"http://{LOOPBACK}:{admin}")
        proxy.wait_ready()
        return proxy

    def cleanup(self) -> None:
        for proc in reversed(self.processes):
            if proc.alive():
                # A stopped process cannot die of SIGKILL until it is continued.
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()


@dataclass
class Proxy:
    process: ServerProcess
    url: str
    admin_url: str

    def wait_ready(self, timeout: float = STARTUP_DEADLINE) -> None:
        def ready() -> bool:
            if not self.process.alive():
                raise RuntimeError(f"proxy exited early:\n{self.process.log_tail()}")
            try:
                return httpx.get(f"{self.admin_url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "proxy /readyz")
        # Workers accept only once the data-port server has started in each of them.
        wait_until(lambda: port_open(self.process.port), timeout, "proxy data port")


def ringleader_argv() -> list[str]:
    script = Path(sys.executable).with_name("ringleader")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ringleader.cli"]


def memcached_url(proc: ServerProcess, **params: str | int) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"memcached://{LOOPBACK}:{proc.port}" + (f"?{query}" if query else "")


def redis_url(proc: ServerProcess, db: int = 0, **params: str | int) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"redis://{LOOPBACK}:{proc.port}/{db}" + (f"?{query}" if query else "")


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
