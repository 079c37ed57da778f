"""A whole Ringleader fleet of real processes, for end-to-end tests and the failover bench.

`Fleet` runs a 3-node control cluster (`tests/support/control_cluster.py`, with short
failure-detector settings), two pools registered through the operator CLI (`default`: 3
memcached; `redis`: 3 redis-server), and two `ringleader proxy --control` per pool. It
offers what the tests observe with: each proxy's `/status` and metrics, KV calls that log
every `X-Ringleader-Epoch` (`EpochLog` checks they never go down), a KV load thread, the
event history, and direct protocol access to the cache servers (memcached meta commands,
redis TTL) to see what is really stored where.

`SelectiveRelay` is the one fault injector that is not a process signal: a TCP relay in
front of a cache server that refuses connections opened by chosen processes (identified
by socket ownership in /proc, see its docstring), so one proxy can lose a backend that
the other still reaches.

Everything runs on loopback and is started and ended by PID; every wait polls with a
deadline.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.control_cluster import ControlCluster, parse_metric, pump
from tests.support.servers import (
    LOOPBACK,
    STARTUP_DEADLINE,
    ProcessGroup,
    ServerProcess,
    free_port,
    port_open,
    ringleader_argv,
    wait_until,
)

# Detector settings for tests: short, but long enough to be measured.
HYSTERESIS = 2.0
REPORT_TTL = 3.0
REPORT_INTERVAL = 1.0
FAILOVER_TTL = 30
POOLS = {"default": "memcached", "redis": "redis"}


# -- the control plane ------------------------------------------------------------------------


class FleetControl(ControlCluster):
    """A `ControlCluster` whose nodes run with the given failure-detector flags."""

    def __init__(
        self, procs: ProcessGroup, workdir: Path, detector_args: list[str], relays: bool = False
    ) -> None:
        super().__init__(procs, workdir, 3, relays=relays)
        self.detector_args = detector_args

    def argv(self, node_id: int) -> list[str]:
        return [*super().argv(node_id), *self.detector_args]


# -- the epoch log ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    start: float
    end: float
    epoch: int


class EpochLog:
    """Every `X-Ringleader-Epoch` each proxy answered with, and when.

    Invariant 2 as observed from outside: for two responses of one proxy where the first
    was complete before the second was sent, the second's epoch is not lower. (Requests in
    flight together may legitimately finish in either order.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, list[Seen]] = {}

    def record(self, proxy: str, start: float, end: float, epoch: int) -> None:
        with self._lock:
            self._seen.setdefault(proxy, []).append(Seen(start, end, epoch))

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._seen.values())

    def seen_epochs(self, proxies: list[str]) -> set[int]:
        with self._lock:
            return {r.epoch for p in proxies for r in self._seen.get(p, [])}

    def violations(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            seen = {k: list(v) for k, v in self._seen.items()}
        for proxy, records in seen.items():
            by_end = sorted(records, key=lambda r: r.end)
            ends = [r.end for r in by_end]
            prefix_max: list[Seen] = []
            for r in by_end:
                best = r if not prefix_max or r.epoch >= prefix_max[-1].epoch else prefix_max[-1]
                prefix_max.append(best)
            for r in records:
                i = bisect.bisect_left(ends, r.start)  # responses complete before r started
                if i and prefix_max[i - 1].epoch > r.epoch:
                    earlier = prefix_max[i - 1]
                    out.append(
                        f"{proxy}: epoch {r.epoch} sent at {r.start:.3f} after epoch "
                        f"{earlier.epoch} was answered at {earlier.end:.3f}"
                    )
        return out


# -- proxies, backends ------------------------------------------------------------------------


@dataclass
class FleetProxy:
    name: str
    pool: str
    process: ServerProcess
    url: str
    admin_url: str
    argv: list[str]

    @property
    def identity(self) -> str:
        """What the proxy reports as (proxy/reporter.py: hostname/listen)."""
        return f"{socket.gethostname()}/{self.url.removeprefix('http://')}"


@dataclass
class Backend:
    name: str
    kind: str  # memcached | redis
    pool: str
    port: int  # where the cache server listens
    process: ServerProcess
    registered_port: int = 0  # what the ring's URL points at (a relay, or the server)

    @property
    def url(self) -> str:
        port = self.registered_port or self.port
        if self.kind == "memcached":
            return f"memcached://{LOOPBACK}:{port}?name={self.name}"
        return f"redis://{LOOPBACK}:{port}/0?name={self.name}"


@dataclass
class Response:
    status: int
    epoch: int | None
    backend: str | None
    body: bytes
    headers: dict[str, str]


class Fleet:
    def __init__(
        self, workdir: Path, *, hysteresis: float = HYSTERESIS, report_ttl: float = REPORT_TTL,
        extra_control: list[str] | None = None, proxies_per_pool: int = 2,
        pools: dict[str, str] | None = None, control_relays: bool = False,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        self.procs = ProcessGroup(workdir)
        self.hysteresis = hysteresis
        self.report_ttl = report_ttl
        detector = ["--hysteresis", str(hysteresis), "--report-ttl", str(report_ttl),
                    *(extra_control or [])]  # fmt: skip
        self.control = FleetControl(self.procs, workdir / "control", detector, control_relays)
        self.pools = dict(pools or POOLS)
        self.proxies_per_pool = proxies_per_pool
        self.backends: dict[str, list[Backend]] = {p: [] for p in self.pools}
        self.proxies: dict[str, list[FleetProxy]] = {p: [] for p in self.pools}
        self.epochs = EpochLog()
        self.http = httpx.Client(timeout=3.0)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Fleet:
        self.control.start()
        for pool, kind in self.pools.items():
            if pool != "default":
                self.cli("pool", "create", pool)
            for i in range(1, 4):
                self.add_backend(pool, kind, f"{'mc' if kind == 'memcached' else 'rd'}{i}")
        for pool in self.pools:
            for i in range(self.proxies_per_pool):
                self.proxies[pool].append(self.start_proxy(pool, f"{pool}-p{i + 1}"))
        for pool in self.pools:
            self.wait_converged(pool, lambda members: len(members) == 3, "three backends")
        return self

    def add_backend(self, pool: str, kind: str, name: str, *, via_port: int = 0,
                    process: ServerProcess | None = None) -> Backend:  # fmt: skip
        if process is None:
            process = self.procs.memcached() if kind == "memcached" else self.procs.redis()
        backend = Backend(name, kind, pool, process.port, process, via_port)
        self.cli("backend", "add", backend.url, "--pool", pool)
        self.backends[pool].append(backend)
        return backend

    def proxy_argv(self, pool: str, listen: int, admin: int) -> list[str]:
        return ["proxy", "--listen", f"{LOOPBACK}:{listen}", "--admin", f"{LOOPBACK}:{admin}",
                "--control", self.control.control_arg, "--pool", pool,
                "--token-file", str(self.control.token_file),
                "--report-interval", str(REPORT_INTERVAL), "--health-interval", "0.5",
                "--health-timeout", "0.25", "--failover-ttl", str(FAILOVER_TTL)]  # fmt: skip

    def start_proxy(self, pool: str, name: str, *, wait: bool = True) -> FleetProxy:
        listen, admin = free_port(), free_port()
        argv = self.proxy_argv(pool, listen, admin)
        proc = self.procs.ringleader(argv, listen, name=name)
        proxy = FleetProxy(name, pool, proc, f"http://{LOOPBACK}:{listen}",
                           f"http://{LOOPBACK}:{admin}", argv)  # fmt: skip
        if wait:
            self.wait_proxy_ready(proxy)
        return proxy

    def wait_proxy_ready(self, proxy: FleetProxy, timeout: float = STARTUP_DEADLINE) -> None:
        def ready() -> bool:
            if not proxy.process.alive():
                raise RuntimeError(f"{proxy.name} exited early:\n{proxy.process.log_tail()}")
            try:
                return self.http.get(proxy.admin_url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, f"{proxy.name} /readyz")
        wait_until(lambda: port_open(proxy.process.port), timeout, f"{proxy.name} data port")

    def close(self) -> None:
        self.http.close()
        self.control.close()
        self.procs.cleanup()

    # -- the operator CLI --------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "RINGLEADER_TOKEN"}
        argv = [*ringleader_argv(), *args, "--control", self.control.control_arg,
                "--token-file", str(self.control.token_file)]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr or result.stdout}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def events(self, pool: str = "default", limit: int = 1000) -> list[dict[str, Any]]:
        body = self.cli_json("events", "--pool", pool, "--limit", str(limit))
        return list(body["events"])

    def control_ring(self, pool: str) -> dict[str, Any]:
        return dict(self.cli_json("ring", "--pool", pool))

    def control_backends(self, pool: str) -> dict[str, dict[str, Any]]:
        body = self.cli_json("backend", "list", "--pool", pool)
        return {b["name"]: b for b in body["backends"]}

    # -- observing proxies -------------------------------------------------------------------

    def status(self, proxy: FleetProxy) -> dict[str, Any]:
        r = self.http.get(proxy.admin_url + "/status", timeout=2)
        r.raise_for_status()
        return dict(r.json())

    def metric(self, proxy: FleetProxy, name: str, labels: dict[str, str] | None = None) -> float:
        text = self.http.get(proxy.admin_url + "/metrics", timeout=2).text
        return parse_metric(text, name, labels)

    def ring_of(self, proxy: FleetProxy) -> tuple[int, list[str]]:
        status = self.status(proxy)
        return int(status["epoch"]), [b["name"] for b in status["backends"]]

    def wait_converged(
        self, pool: str, members: Callable[[list[str]], bool], what: str,
        timeout: float = 20.0, after: int = -1,
    ) -> int:  # fmt: skip
        """Waits until every proxy of `pool` routes with one epoch above `after` whose
        members satisfy `members`, equal to the control plane's epoch; returns it."""
        found: list[int] = []

        def converged() -> bool:
            try:
                rings = [self.ring_of(p) for p in self.proxies[pool]]
            except httpx.HTTPError:
                return False
            epochs = {e for e, _ in rings}
            if len(epochs) != 1 or not all(members(m) for _, m in rings):
                return False
            epoch = epochs.pop()
            if epoch <= after:
                return False
            found.append(epoch)
            return True

        wait_until(converged, timeout, f"proxies of pool {pool} to agree on {what}")
        return found[-1]

    def view(self, proxy: FleetProxy, backend: str) -> str | None:
        """The proxy's own heartbeat verdict on `backend` (None if not probed)."""
        for b in self.status(proxy)["backends"]:
            if b["name"] == backend:
                return str(b["state"])
        return None

    # -- KV ------------------------------------------------------------------------------------

    def kv(self, proxy: FleetProxy, method: str, key: str, value: bytes | None = None,
           ttl: int | None = None, client: httpx.Client | None = None) -> Response:  # fmt: skip
        params = {"ttl": str(ttl)} if ttl is not None else None
        start = time.monotonic()
        r = (client or self.http).request(
            method, f"{proxy.url}/v1/kv/{key}", content=value, params=params
        )
        end = time.monotonic()
        raw = r.headers.get("x-ringleader-epoch")
        epoch = int(raw) if raw is not None else None
        if epoch is not None:
            self.epochs.record(proxy.name, start, end, epoch)
        return Response(r.status_code, epoch, r.headers.get("x-ringleader-backend"), r.content,
                        dict(r.headers))  # fmt: skip

    def put(self, proxy: FleetProxy, key: str, value: bytes, ttl: int | None = None) -> Response:
        return self.kv(proxy, "PUT", key, value, ttl)

    def get(self, proxy: FleetProxy, key: str) -> Response:
        return self.kv(proxy, "GET", key)

    def backend(self, pool: str, name: str) -> Backend:
        return next(b for b in self.backends[pool] if b.name == name)

    def keys_owned(self, pool: str, prefix: str, count: int) -> dict[str, list[str]]:
        """`count` keys per backend, by where the pool's first proxy routes them now
        (one PUT each; the values are the keys)."""
        proxy = self.proxies[pool][0]
        names = {b.name for b in self.backends[pool]}
        out: dict[str, list[str]] = {n: [] for n in names}
        i = 0
        while any(len(v) < count for v in out.values()) and i < 50 * count * len(names):
            # fnv1a_64 spreads keys that differ only in a counter poorly: vary them more.
            key = f"{prefix}-{hashlib.md5(str(i).encode()).hexdigest()[:12]}"
            i += 1
            r = self.put(proxy, key, key.encode())
            assert r.status == 204, (key, r)
            assert r.backend is not None
            if len(out[r.backend]) < count:
                out[r.backend].append(key)
        return out

    # -- cache servers -----------------------------------------------------------------------

    def restart_backend(self, backend: Backend) -> None:
        if backend.process.alive():
            backend.process.cont()
            backend.process.kill()
        if backend.kind == "memcached":
            backend.process = self.procs.memcached(port=backend.port)
        else:
            backend.process = self.procs.redis(port=backend.port)

    @contextlib.contextmanager
    def load(self, pool: str, keys: list[str], *, method: str = "GET") -> Iterator[KVLoad]:
        load = KVLoad(self, self.proxies[pool], keys, method)
        load.start()
        try:
            yield load
        finally:
            load.stop()


# -- direct cache-server access ---------------------------------------------------------------


def exchange(port: int, payload: bytes, done: Callable[[bytes], bool], timeout: float = 5.0
             ) -> bytes:  # fmt: skip
    """Sends `payload` on a new connection and reads until `done(reply)` or the connection
    closes."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        deadline = time.monotonic() + timeout
        while not done(data):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete reply from port {port}: {data!r}")
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def memcached_meta(port: int, key: str) -> tuple[bytes | None, int | None]:
    """(value, remaining TTL in seconds; -1 = no expiry) via `mg KEY v t`, or (None, None)."""
    reply = exchange(port, f"mg {key} v t\r\n".encode(),
                      lambda d: d.startswith(b"EN\r\n") or (d.endswith(b"\r\n") and
                      d.count(b"\r\n") >= 2))  # fmt: skip
    if reply.startswith(b"EN"):
        return None, None
    header, _, rest = reply.partition(b"\r\n")
    parts = header.split()
    assert parts[0] == b"VA", reply
    size = int(parts[1])
    ttl = next(int(p[1:]) for p in parts[2:] if p.startswith(b"t"))
    return rest[:size], ttl


def memcached_set(port: int, key: str, value: bytes) -> None:
    reply = exchange(port, b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value),
                      lambda d: d.endswith(b"\r\n"))  # fmt: skip
    assert reply == b"STORED\r\n", reply


def memcached_stat(port: int, name: str) -> int:
    """One counter of memcached's `stats`."""
    reply = exchange(port, b"stats\r\n", lambda d: d.endswith(b"END\r\n"))
    for line in reply.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise KeyError(f"memcached has no stat {name!r}")


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def redis_ttl(port: int, key: str) -> int:
    """redis TTL: seconds left, -1 without expiry, -2 if absent."""
    reply = exchange(port, _resp(b"TTL", key.encode()), lambda d: d.endswith(b"\r\n"))
    assert reply.startswith(b":"), reply
    return int(reply[1:].strip())


def redis_set(port: int, key: str, value: bytes) -> None:
    reply = exchange(port, _resp(b"SET", key.encode(), value), lambda d: d.endswith(b"\r\n"))
    assert reply == b"+OK\r\n", reply


def redis_exists(port: int, key: str) -> bool:
    reply = exchange(port, _resp(b"EXISTS", key.encode()), lambda d: d.endswith(b"\r\n"))
    return reply.strip() == b":1"


def stored_ttl(backend: Backend, key: str) -> int | None:
    """The TTL the cache server holds for `key` (None if absent, -1 if none)."""
    if backend.kind == "memcached":
        value, ttl = memcached_meta(backend.port, key)
        return None if value is None else ttl
    ttl = redis_ttl(backend.port, key)
    return None if ttl == -2 else ttl


def plant(backend: Backend, key: str, value: bytes) -> None:
    """Writes straight to the cache server, bypassing every proxy."""
    if backend.kind == "memcached":
        memcached_set(backend.port, key, value)
    else:
        redis_set(backend.port, key, value)


def holds(backend: Backend, key: str) -> bool:
    if backend.kind == "memcached":
        return memcached_meta(backend.port, key)[0] is not None
    return redis_exists(backend.port, key)


# -- KV load ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    proxy: str
    key: str
    start: float
    end: float
    status: int  # 0: no HTTP answer at all
    epoch: int | None
    backend: str | None
    body: bytes


@dataclass
class KVLoad:
    """One thread per proxy sending sequential KV requests over `keys`, round-robin."""

    fleet: Fleet
    proxies: list[FleetProxy]
    keys: list[str]
    method: str = "GET"
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i, proxy in enumerate(self.proxies):
            t = threading.Thread(target=self._run, args=(proxy, i), daemon=True,
                                 name=f"load-{proxy.name}")  # fmt: skip
            self._threads.append(t)
            t.start()

    def _run(self, proxy: FleetProxy, offset: int) -> None:
        with httpx.Client(timeout=3.0) as client:
            i = offset
            while not self._stop.is_set():
                key = self.keys[i % len(self.keys)]
                i += 1
                start = time.monotonic()
                try:
                    r = self.fleet.kv(proxy, self.method, key, client=client)
                except httpx.HTTPError:
                    out = Outcome(proxy.name, key, start, time.monotonic(), 0, None, None, b"")
                else:
                    out = Outcome(proxy.name, key, start, time.monotonic(), r.status, r.epoch,
                                  r.backend, r.body)  # fmt: skip
                with self._lock:
                    self.outcomes.append(out)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_count(self, n: int, timeout: float = 10.0) -> None:
        wait_until(lambda: len(self.snapshot()) >= n, timeout, f"{n} KV requests")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


# -- the selective relay ----------------------------------------------------------------------


def descendants(root: int) -> set[int]:
    """`root` and every live process below it (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def socket_owner(peer_port: int, local_port: int, candidates: set[int]) -> int | None:
    """Which of `candidates` holds the loopback TCP socket 127.0.0.1:peer_port ->
    127.0.0.1:local_port (the client end of a connection we accepted), if any."""
    want_local = f"0100007F:{peer_port:04X}"
    want_remote = f"0100007F:{local_port:04X}"
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want_local and fields[2] == want_remote:
                inode = fields[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


class SelectiveRelay:
    """A TCP relay in front of one cache server that refuses chosen processes.

    Why: both proxies route with the same ring, so the backend's URL is shared, and on one
    machine all loopback connections come from 127.0.0.1. What tells the proxies apart is
    which process owns the connecting socket: the relay looks the peer's port up in
    /proc/net/tcp, finds the socket's inode among the file descriptors of the blocked
    proxy's process tree (supervisor and workers), and resets those connections, new and
    existing. To that proxy the backend is unreachable (its heartbeats and its traffic
    fail); to the other, it is healthy. No proxy code is changed or informed.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._blocked_root: int | None = None
        self._blocked: set[int] = set()
        self._conns: dict[asyncio.StreamWriter, int | None] = {}
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"relay-{target_port}")  # fmt: skip
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._call(self._listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, self.port,
                                                  reuse_address=True)  # fmt: skip

    def _owner(self, writer: asyncio.StreamWriter) -> int | None:
        if self._blocked_root is None:
            return None
        peer = writer.get_extra_info("peername")
        self._blocked = descendants(self._blocked_root)
        return socket_owner(int(peer[1]), self.port, self._blocked)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        owner = self._owner(writer)
        if owner is not None:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns[writer] = None
        self._conns[up_writer] = None
        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._conns.pop(w, None)
                w.transport.abort()

    def block(self, root_pid: int) -> None:
        """From now on, refuse `root_pid`'s process tree (and cut its open connections)."""

        async def change() -> None:
            self._blocked_root = root_pid
            for w in list(self._conns):
                peer = w.get_extra_info("peername")
                if peer and int(peer[1]) != self.target_port and self._owner(w) is not None:
                    w.transport.abort()

        self._call(change())

    def unblock(self) -> None:
        async def change() -> None:
            self._blocked_root = None

        self._call(change())

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.transport.abort()

        with contextlib.suppress(Exception):
            self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
