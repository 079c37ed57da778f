"""Control plane at scale: 3 real control nodes against N simulated proxies.

    python -m bench.control_scale [--proxies 100,500,1000] [--spread off,on] [--changes 20]
                                  [--steady 15] [--simulators 4] [--loadgen-nice 19]
                                  [--watcher wire|client] [--json FILE] [--profile DIR]

For each N and watch placement: a fresh 3-node `ringleader control` cluster on loopback
(bench.control_failover's), a pool of BACKENDS backends, and N simulated proxies shared out
over `--simulators` load-generator processes (asyncio tasks). Real proxies have CPUs of
their own; here the simulated fleet needs about 0.7 of this 2-core machine's cores, so
`--loadgen-nice` (default 19) gives the nodes priority over it, and 0 lets it compete with
them on equal terms (then the nodes wait for a CPU long enough to miss heartbeats: see
BENCHMARKS.md). Each simulated proxy runs the proxy's own HealthReporter (a report with the
cluster token every 2 s, and within a random 0-0.5 s when its ring epoch changes) and a
ring watch, each on its own connections, as one real proxy does: `--watcher wire`
(default) is WireWatch, the RingWatcher's long-poll timed as its answer comes off the
socket; `client` is the proxy's RingWatcher itself, timed once it has installed the ring,
which adds the simulated fleet's own httpx time to every figure. The proxies start over
STARTUP_RAMP seconds.

Measured per row, over a `--steady` window with every watch held and reports flowing:
* the leader's CPU (user+system from /proc/PID/stat, as a fraction of one core), the time
  it spent runnable but waiting for a CPU (/proc/PID/schedstat; high means the machine,
  not the node, is the bottleneck), the API requests it served per second and so its CPU
  per request; the followers' mean CPU; the leader's RSS at the window's end; the watches
  each node holds (`ringleader_control_watchers`);
* then `--changes` ring changes (drain, then activate, one backend), one every
  CHANGE_EVERY seconds, each timed from the write's acknowledgement to the moment the first
  and the last simulated proxy see its epoch (CLOCK_MONOTONIC is one clock for all
  processes); p50, p99 and max over the changes. A change not seen by every proxy within
  EPOCH_DEADLINE counts as infinite; a write not acknowledged within WRITE_DEADLINE is
  counted apart. "new terms" is how far the Raft term moved during the row: elections.
* per node, how late it answers `/healthz`, asked every LAG_PROBE_EVERY seconds over the
  ring changes: the worst answer within LAG_WINDOW of a change, against the worst between
  changes. A node whose event loop stalls answers that much late, and a leader's stall
  longer than the followers' election timeout (200-400 ms) costs an election.
* `--profile DIR` runs `py-spy record` on the leader over the steady window, and again over
  the ring changes, and leaves their collapsed stacks there.

Placement `off` is a watch without `spread_by`: every proxy lists the control URLs in the
same order and long-polls the first that answers; the bench lists the leader first, so
every watch lands on it. `on` is the proxy's default, RingWatcher(spread_by=<identity>):
each watch starts at a node picked by a hash of the proxy's identity, so the followers
serve two thirds of them. Reports go to the first URL either way: the failure
detector runs on the leader.

Everything is bounded in time: the simulators exit when the bench closes their stdin or
after a deadline, and a row whose proxies cannot all get a first ring within
STARTUP_SECONDS is reported as failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
import types
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.common import table
from bench.control_failover import percentile, running
from bench.control_write_path import cpu_seconds
from control.transport import PeerAddress
from proxy.config import ProxyConfig, build
from proxy.health import BackendHealth
from proxy.metrics import ProxyMetrics
from proxy.reporter import HealthReporter, proxy_identity
from proxy.telemetry import GaugeChild
from proxy.watch import ANSWERED_BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MIN, WATCH_SECONDS, RingWatcher
from ringleader.address import Address
from ringleader.control_client import RETRYABLE_STATUS, ControlClient, ControlError, node_for
from ringleader.wire import RingDocument
from tests.support.control_cluster import parse_metric

POOL = "default"
BACKENDS = 4
REPORT_EVERY = 2.0
CHANGE_EVERY = 2.5  # seconds between ring changes: past one report interval
STARTUP_RAMP = 5.0  # seconds over which the simulated proxies start
STARTUP_SECONDS = 120.0  # for every simulated proxy to hold its first ring
EPOCH_DEADLINE = 10.0  # for every simulated proxy to see one change
WRITE_DEADLINE = 5.0  # for one ring change to be acknowledged, retries included
WARMUP = 2 * REPORT_EVERY
LAG_PROBE_EVERY = 0.02  # seconds between one node's /healthz probes
LAG_WINDOW = 1.0  # seconds after a change's acknowledgement that count as its aftermath
SIMULATED_PORTS = 40000  # identities only (hostname/127.0.0.1:PORT): nothing listens there
EPOCH_GAUGE = ProxyMetrics().ring_epoch.name
WATCHERS = "ringleader_control_watchers"
REPOSITORY = Path(__file__).resolve().parents[1]
PLACEMENTS = {"off": False, "on": True}
WATCHERS_KINDS = ("wire", "client")


# -- the load generator: one process's share of the simulated fleet -------------------------------


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Fleet:
    """The epochs the simulated proxies of this process have installed, announced (as
    `{"epoch": E, "first": T1, "last": T2}`) when the last of them reaches each one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.floor: int | None = None  # every proxy's epoch is at least this
        self.reached: Counter[int] = Counter()  # epoch above the floor -> proxies at or past it
        self.first: dict[int, float] = {}  # epoch -> when the first proxy reached it

    def start(self, epochs: list[int]) -> None:
        self.floor = min(epochs)
        for epoch in epochs:
            self._count(self.floor, epoch, time.monotonic())

    def installed(self, before: int, after: int, seen: float) -> None:
        if self.floor is not None:
            self._count(max(before, self.floor), after, seen)

    def _count(self, before: int, after: int, now: float) -> None:
        for epoch in range(before + 1, after + 1):
            self.reached[epoch] += 1
            first = self.first.setdefault(epoch, now)
            if self.reached[epoch] == self.size:
                emit({"epoch": epoch, "first": first, "last": now})


class WireWatch:
    """The proxy's ring watch at the HTTP level, for `--watcher wire`: the same long-poll
    (path, wait_epoch, timeout), started at the same node (spread_by), moving to the next
    node on a 503 or a lost connection with proxy.watch's backoff, and asking without
    waiting after a failure. An answer counts as seen when its head comes off the socket:
    the product's RingWatcher spends about a millisecond of httpx CPU per answer and
    re-poll, so 1,000 of them on this 2-core machine need more CPU per ring change than the
    three nodes do, and the time measured would be the simulated fleet's, not the control
    plane's (real proxies each have CPUs of their own)."""

    def __init__(self, urls: list[str], pool: str, identity: str | None,
                 on_epoch: Callable[[int, float], None]) -> None:  # fmt: skip
        self._nodes = [PeerAddress.parse(url) for url in urls]
        self._index = 0 if identity is None else node_for(identity, len(urls))
        self._path = f"/v1/pools/{quote(pool, safe='')}/ring"
        self._on_epoch = on_epoch
        self._rng = random.Random(identity)
        self.epoch = -1
        self.received_first = asyncio.Event()

    async def run(self) -> None:
        backoff, retrying = BACKOFF_MIN, False
        while True:
            node = self._nodes[self._index]
            status = None
            try:
                reader, writer = await asyncio.open_connection(node.host, node.port)
                try:
                    while (status := await self._poll(reader, writer, node, retrying)) == 200:
                        retrying, backoff = False, BACKOFF_MIN
                finally:
                    writer.close()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                pass  # ValueError: an answer that is not the ring document, WireError included
            retrying = True
            self._index = (self._index + 1) % len(self._nodes)
            cap = ANSWERED_BACKOFF_MAX if status in RETRYABLE_STATUS else BACKOFF_MAX
            backoff = min(backoff, cap)
            await asyncio.sleep(self._rng.uniform(0, backoff))
            backoff = min(backoff * 2, cap)

    async def _poll(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, node: PeerAddress,
        retrying: bool,
    ) -> int:  # fmt: skip
        """One long-poll on an open connection; the status it was answered with."""
        wait = 0.0 if retrying else WATCH_SECONDS
        writer.write(f"GET {self._path}?wait_epoch={self.epoch}&timeout={wait:g} HTTP/1.1\r\n"
                     f"host: {node.authority}\r\n\r\n".encode())  # fmt: skip
        head = await reader.readuntil(b"\r\n\r\n")
        seen = time.monotonic()
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
        body = await reader.readexactly(length)
        status = int(head[9:12])
        if status == 200:
            epoch = RingDocument.from_json(json.loads(body)).epoch
            if epoch > self.epoch:
                self._on_epoch(epoch, seen)
                self.epoch = epoch
            self.received_first.set()
        return status


class SimulatedProxy:
    """A proxy's control-plane traffic: its ring watch and its health reports."""

    def __init__(
        self, config: ProxyConfig, backends: list[str], fleet: Fleet, spread: bool,
        transports: list[httpx.AsyncBaseTransport], watcher: str,
    ) -> None:  # fmt: skip
        now = time.time()
        view = {name: BackendHealth(state="up", since=now) for name in backends}
        self.reporter = HealthReporter(config, view, EPOCH_GAUGE, transport=transports[0])
        identity = proxy_identity(config) if spread else None
        self.watcher: RingWatcher | WireWatch
        if watcher == "wire":
            self.watcher = WireWatch(list(config.control), config.pool, identity, self._install)
        else:
            self.watcher = RingWatcher(
                list(config.control), config.pool,
                lambda ring: self._install(ring.epoch, time.monotonic()), GaugeChild(),
                transport=transports[1], spread_by=identity,
            )  # fmt: skip
        self.epoch = -1
        self._fleet = fleet

    def _install(self, epoch: int, seen: float) -> None:
        before, self.epoch = self.epoch, epoch
        self._fleet.installed(before, epoch, seen)
        # As the proxy's workers do once they route on it: the reporter tells the leader.
        self.reporter.worker_metrics(0, {EPOCH_GAUGE: {(): [float(epoch)]}})

    async def run(self, delay: float) -> None:
        """The proxy's two loops, from `delay` seconds on: a fleet's proxies start apart."""
        await asyncio.sleep(delay)
        await asyncio.gather(self.watcher.run(), self.reporter.run())

    async def close(self) -> None:
        if isinstance(self.watcher, RingWatcher):
            await self.watcher.close()
        await self.reporter.close()


class RowFailed(Exception):
    """One configuration could not be measured; the message says why."""


class WarningCount(logging.Handler):
    """Counts warnings by logger: watch and report failures in the simulated fleet."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name] += 1


def skip_sniffio_probe() -> None:
    """httpcore asks which async library runs with `import sniffio` four times per request,
    and without sniffio installed each failed import costs about 0.25 ms of CPU. The load
    generator's CPU comes out of the nodes' share of this machine, so it answers for it."""
    if importlib.util.find_spec("sniffio") is None:
        stub = types.ModuleType("sniffio")
        stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = stub


def lower_priority(nice: int) -> None:
    """Niceness `nice` for this process and, where Linux schedules by session (autogroups,
    /proc/sys/kernel/sched_autogroup_enabled), for its session, which is its own: a
    process's own niceness only ranks it within its session, so without the second the
    simulators would still take as much CPU as each node."""
    os.nice(nice)
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(nice))


async def simulate(args: argparse.Namespace) -> None:
    lower_priority(args.nice)
    skip_sniffio_probe()
    warnings = WarningCount()
    logging.getLogger().addHandler(warnings)
    base = build({"control": args.control, "token-file": args.token_file, "pool": POOL,
                  "report-interval": REPORT_EVERY})  # fmt: skip
    # One TLS context for all: httpx would otherwise build one per client (slow, and unused
    # on plain http), while each proxy still gets its own connections.
    tls = httpx.create_ssl_context()
    fleet = Fleet(args.count)
    proxies = [
        SimulatedProxy(
            replace(base, listen=Address("127.0.0.1", SIMULATED_PORTS + args.first + i)),
            args.backends.split(","),
            fleet,
            args.spread,
            [httpx.AsyncHTTPTransport(verify=tls) for _ in range(2)],
            args.watcher,
        )
        for i in range(args.count)
    ]
    rng = random.Random(args.first)
    tasks = [asyncio.create_task(p.run(rng.uniform(0, STARTUP_RAMP))) for p in proxies]
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        async with asyncio.timeout(args.seconds):
            await asyncio.gather(*(p.watcher.received_first.wait() for p in proxies))
            fleet.start([p.epoch for p in proxies])
            emit({"ready": fleet.floor})
            await stdin.read()  # the bench closes stdin when it is done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in proxies))
        emit({"done": True, "warnings": dict(warnings.counts)})


# -- the bench -------------------------------------------------------------------------------------


@dataclass
class Simulator:
    """One load-generator process, as the bench sees it."""

    process: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reached: dict[int, tuple[float, float]] = field(default_factory=dict)  # first, last
    news: asyncio.Event = field(default_factory=asyncio.Event)
    warnings: dict[str, int] = field(default_factory=dict)

    async def listen(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            if "ready" in message:
                self.ready.set()
            elif "epoch" in message:
                self.reached[message["epoch"]] = (message["first"], message["last"])
            elif "done" in message:
                self.warnings = message["warnings"]
            self.news.set()

    async def reach(self, epoch: int) -> tuple[float, float]:
        while epoch not in self.reached:
            if self.process.returncode is not None:
                raise RuntimeError(f"a simulator exited with {self.process.returncode}")
            self.news.clear()
            await self.news.wait()
        return self.reached[epoch]


async def start_simulators(
    count: int, processes: int, urls: list[str], token_file: Path, spread: bool,
    lifetime: float, logs: Path, nice: int, watcher: str,
) -> list[Simulator]:  # fmt: skip
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    backends = ",".join(f"bench-{b}" for b in range(BACKENDS))
    simulators = []
    first = 0
    for i, share in enumerate(s for s in shares if s):
        argv = [sys.executable, "-m", "bench.control_scale", "simulate",
                "--control", ",".join(urls), "--token-file", str(token_file),
                "--count", str(share), "--first", str(first), "--backends", backends,
                "--seconds", str(lifetime), "--nice", str(nice), "--watcher", watcher,
                *(["--spread"] if spread else [])]  # fmt: skip
        # A local log file, opened once before any traffic: blocking here costs nothing.
        with open(logs / f"simulator-{i}.log", "ab") as log:  # noqa: ASYNC230
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, cwd=REPOSITORY, start_new_session=True,
            )  # fmt: skip
        simulators.append(Simulator(process))
        first += share
    return simulators


async def stop_simulators(simulators: list[Simulator], listeners: list[asyncio.Task[None]]) -> None:
    for s in simulators:
        if s.process.stdin is not None and not s.process.stdin.is_closing():
            s.process.stdin.close()
    for s in simulators:
        try:
            async with asyncio.timeout(20):
                await s.process.wait()
        except TimeoutError:
            s.process.kill()  # by its pid: it is our child
            await s.process.wait()
    await asyncio.gather(*listeners, return_exceptions=True)


async def metrics_text(url: str) -> str | None:
    """The node's /metrics; None if it does not answer within 10 s (a saturated node
    answers late, and that is a finding in itself)."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            return (await http.get(url + "/metrics")).text
    except httpx.HTTPError:
        return None


def sample(text: str | None, name: str) -> float | None:
    return None if text is None else parse_metric(text, name)


def current_terms(cluster: Any) -> list[int]:
    """The Raft term of every node that answers its status within 10 s."""
    statuses = (cluster.status(i, timeout=10.0) for i in cluster.nodes)
    return [s["term"] for s in statuses if s is not None]


def run_queue_seconds(pid: int) -> float:
    """Time process `pid` has spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


@dataclass
class Usage:
    """Counters of every node at one instant."""

    at: float
    cpu: dict[int, float]
    waiting: dict[int, float]
    requests: float | None  # control API requests the leader has served

    @classmethod
    async def take(cls, pids: dict[int, int], leader_url: str) -> Usage:
        text = await metrics_text(leader_url)
        return cls(
            time.monotonic(),
            {i: cpu_seconds(pid) for i, pid in pids.items()},
            {i: run_queue_seconds(pid) for i, pid in pids.items()},
            sample(text, "ringleader_control_api_requests_total"),
        )


class LoopLag:
    """How long each node takes to answer `/healthz`, asked every LAG_PROBE_EVERY seconds
    over its own connection: the route does no work, so the answer's lateness is how long
    the node's event loop was busy with something else."""

    def __init__(self, urls: dict[int, str]) -> None:
        self._urls = urls
        self.samples: dict[int, list[tuple[float, float]]] = {i: [] for i in urls}  # sent, took

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            await asyncio.gather(*(self._probe(http, i) for i in self._urls))

    async def _probe(self, http: httpx.AsyncClient, node: int) -> None:
        while True:
            sent = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                await http.get(self._urls[node] + "/healthz")
            self.samples[node].append((sent, time.monotonic() - sent))
            await asyncio.sleep(max(0.0, sent + LAG_PROBE_EVERY - time.monotonic()))  # pacing

    def worst(self, node: int, windows: list[tuple[float, float]]) -> list[float]:
        """Per window [start, end), the longest answer to a probe sent within it."""
        return [
            max((took for sent, took in self.samples[node] if start <= sent < end), default=0.0)
            for start, end in windows
        ]


async def profile(pid: int, seconds: float, out: Path) -> None:
    """py-spy's collapsed stacks of `pid` for `seconds` into `out`."""
    spy = Path(sys.executable).with_name("py-spy")
    process = await asyncio.create_subprocess_exec(
        str(spy), "record", "--nonblocking", "--format", "raw", "--rate", "100",
        "--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(seconds + 30):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def measure(
    system: Any, count: int, spread: bool, args: argparse.Namespace
) -> dict[str, Any]:
    cluster = system.cluster
    system.prepare(BACKENDS)
    leader = system.settle()
    pids = system.pids()
    term = cluster.status(leader, timeout=10)["term"]
    urls = [cluster.url(leader)] + [cluster.url(i) for i in cluster.followers(leader)]
    lifetime = STARTUP_SECONDS + WARMUP + args.steady + args.changes * (CHANGE_EVERY + 5) + 60
    simulators = await start_simulators(
        count, args.simulators, urls, cluster.token_file, spread, lifetime, cluster.workdir,
        args.loadgen_nice, args.watcher,
    )  # fmt: skip
    listeners = [asyncio.create_task(s.listen()) for s in simulators]
    loadgen = [s.process.pid for s in simulators]
    try:
        try:
            async with asyncio.timeout(STARTUP_SECONDS):
                await asyncio.gather(*(s.ready.wait() for s in simulators))
        except TimeoutError:
            raise RowFailed(
                f"not every simulated proxy held a ring {STARTUP_SECONDS:g} s after start"
            ) from None
        await asyncio.sleep(WARMUP)  # pacing: let the reports' first round settle
        loadgen_before = sum(cpu_seconds(pid) for pid in loadgen)
        before = await Usage.take(pids, urls[0])
        if args.profile:
            await profile(pids[leader], args.steady, args.profile / f"n{count}-{spread}.txt")
        else:
            await asyncio.sleep(args.steady)  # the measurement window itself
        after = await Usage.take(pids, urls[0])
        loadgen_cpu = sum(cpu_seconds(pid) for pid in loadgen) - loadgen_before
        rss = rss_bytes(pids[leader])
        watches = {str(i): sample(await metrics_text(cluster.url(i)), WATCHERS) for i in pids}
        lag = LoopLag({i: cluster.url(i) for i in pids})
        probing = asyncio.create_task(lag.run())
        profiling = None
        if args.profile:
            out = args.profile / f"n{count}-{spread}-changes.txt"
            profiling = asyncio.create_task(profile(pids[leader], args.changes * CHANGE_EVERY, out))
        try:
            firsts, delays, acks, unacknowledged = await ring_changes(
                urls, cluster.token, simulators, args.changes
            )
        finally:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)
            if profiling is not None:
                await profiling
    finally:
        await stop_simulators(simulators, listeners)
    terms = await asyncio.to_thread(current_terms, cluster)
    elapsed = after.at - before.at
    cpu = {i: (after.cpu[i] - before.cpu[i]) / elapsed for i in pids}
    served = None
    if after.requests is not None and before.requests is not None:
        served = after.requests - before.requests
    return {
        "elections": max(terms) - term if terms else None,
        "proxies": count, "spread": spread, "leader": leader,
        "leader_cpu": cpu[leader],
        "leader_waiting": (after.waiting[leader] - before.waiting[leader]) / elapsed,
        "leader_requests_per_s": None if served is None else served / elapsed,
        "leader_cpu_ms_per_request": None if not served else 1000 * cpu[leader] * elapsed / served,
        "follower_cpu": statistics.mean(c for i, c in cpu.items() if i != leader),
        "leader_rss_mb": rss / 2**20, "loadgen_cpu": loadgen_cpu / elapsed,
        "watches": watches, "unacknowledged_writes": unacknowledged,
        "delays_s": delays, "first_delays_s": firsts,
        "first_p50_s": percentile(firsts or [math.nan], 0.5),
        "p50_s": percentile(delays or [math.nan], 0.5),
        "p99_s": percentile(delays or [math.nan], 0.99), "max_s": max(delays or [math.nan]),
        "simulator_warnings": [s.warnings for s in simulators],
        "lag_after_change_s": {str(i): lag.worst(i, [(a, a + LAG_WINDOW) for a in acks])
                               for i in pids},
        "lag_between_changes_s": {str(i): lag.worst(i, [(a + LAG_WINDOW, a + CHANGE_EVERY)
                                                         for a in acks]) for i in pids},
    }  # fmt: skip


async def ring_changes(
    urls: list[str], token: str, simulators: list[Simulator], changes: int
) -> tuple[list[float], list[float], list[float], int]:
    """Per change, seconds from the write's acknowledgement to the first and to the last
    proxy seeing it (inf: not every proxy saw it within EPOCH_DEADLINE); when each write was
    acknowledged; and how many writes were not acknowledged at all."""
    firsts: list[float] = []
    lasts: list[float] = []
    acks: list[float] = []
    unacknowledged = 0
    async with ControlClient(urls, token, deadline=WRITE_DEADLINE) as client:
        for n in range(changes):
            started = time.monotonic()
            action = "drain" if n % 2 == 0 else "activate"
            try:
                reply = await client.request(
                    "POST", f"/v1/pools/{POOL}/backends/bench-0/{action}",
                    headers={"x-request-id": uuid.uuid4().hex},
                )  # fmt: skip
            except ControlError:
                unacknowledged += 1
                continue
            acknowledged = time.monotonic()
            acks.append(acknowledged)
            epoch = int(reply.body["epoch"])
            try:
                async with asyncio.timeout(EPOCH_DEADLINE):
                    seen = await asyncio.gather(*(s.reach(epoch) for s in simulators))
            except TimeoutError:
                firsts.append(math.inf)
                lasts.append(math.inf)
                continue
            firsts.append(min(first for first, _ in seen) - acknowledged)
            lasts.append(max(last for _, last in seen) - acknowledged)
            await asyncio.sleep(max(0.0, started + CHANGE_EVERY - time.monotonic()))  # pacing
    return firsts, lasts, acks, unacknowledged


def row(r: dict[str, Any]) -> tuple[str, ...]:
    def shown(value: float | None, unit: float = 1.0, digits: int = 0) -> str:
        return "?" if value is None else f"{unit * value:.{digits}f}"

    watches = "/".join(shown(w) for _, w in sorted(r["watches"].items()))
    ms = [shown(r[k], 1000) for k in ("first_p50_s", "p50_s", "p99_s", "max_s")]
    lags = [
        "/".join(shown(max(r[key][str(i)], default=None), 1000) for i in sorted(map(int, r[key])))
        for key in ("lag_after_change_s", "lag_between_changes_s")
    ]
    return (str(r["proxies"]), "on" if r["spread"] else "off",
            shown(r["leader_cpu"], digits=2), shown(r["leader_waiting"], digits=2),
            shown(r["leader_requests_per_s"]), shown(r["leader_cpu_ms_per_request"], digits=2),
            shown(r["follower_cpu"], digits=2), shown(r["leader_rss_mb"]),
            f"{shown(r['watches'][str(r['leader'])])} ({watches})", *ms,
            str(r["unacknowledged_writes"]), shown(r["elections"]), *lags,
            shown(r["loadgen_cpu"], digits=2))  # fmt: skip


HEADER = ("proxies", "spread", "leader CPU (cores)", "leader run-queue wait (s/s)",
          "leader requests/s", "leader CPU ms/request", "follower CPU (mean)", "leader RSS MB",
          "watches on leader (per node)", "commit->first p50 ms", "commit->last p50 ms",
          "p99 ms", "max ms", "writes not acked", "new terms",
          "worst answer after a change ms (per node)", "worst answer between changes ms",
          "load generator CPU")  # fmt: skip


def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=os.environ.get("BENCH_DIR")))
    results = []
    failures: list[str] = []
    for count in args.proxies:
        for placement in args.spread:
            name = f"n{count}-spread-{placement}"
            try:
                with running("ringleader", workdir / name) as system:
                    result = asyncio.run(measure(system, count, PLACEMENTS[placement], args))
            except RowFailed as exc:
                failures.append(f"{name}: {exc}")
                print(f"  {failures[-1]}", flush=True)
                continue
            results.append(result)
            print(f"  {name}: " + " | ".join(row(result)), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": results, "failed": failures}, indent=2))
    print(table([row(r) for r in results], HEADER))
    for failure in failures:
        print(f"no row for {failure}")
    print(f"logs and data: {workdir}")


def csv_of(kind: type[Any], allowed: set[str] | None = None) -> Any:
    what = "of " + ", ".join(sorted(allowed)) if allowed else f"of {kind.__name__}s"

    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v) for v in text.split(",") if v]
        except ValueError:
            values = []
        if not values or (allowed is not None and not set(values) <= allowed):
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list {what}, got {text!r}"
            )
        return values

    return parse


def main() -> None:
    if sys.argv[1:2] == ["simulate"]:
        sim = argparse.ArgumentParser(prog="bench.control_scale simulate")
        sim.add_argument("simulate")
        sim.add_argument("--control", required=True)
        sim.add_argument("--token-file", required=True)
        sim.add_argument("--count", type=int, required=True)
        sim.add_argument("--first", type=int, required=True)
        sim.add_argument("--backends", required=True)
        sim.add_argument("--seconds", type=float, required=True)
        sim.add_argument("--spread", action="store_true")
        sim.add_argument("--nice", type=int, default=0)
        sim.add_argument("--watcher", choices=WATCHERS_KINDS, default="wire")
        with contextlib.suppress(TimeoutError):
            asyncio.run(simulate(sim.parse_args()))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proxies", type=csv_of(int), default=[100, 500, 1000])
    parser.add_argument(
        "--spread",
        type=csv_of(str, set(PLACEMENTS)),
        default=["off", "on"],
        help="watch placements to run: off (all on the first URL), on",
    )
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--steady",
        type=float,
        default=15.0,
        help="seconds of the steady-state CPU window (default 15)",
    )
    parser.add_argument("--simulators", type=int, default=4, help="load-generator processes")
    parser.add_argument(
        "--watcher",
        choices=WATCHERS_KINDS,
        default="wire",
        help="the simulated proxies' ring watch: wire (timed off the socket, default) or "
        "client (the proxy's RingWatcher over httpx, timed once it has installed the ring)",
    )
    parser.add_argument(
        "--loadgen-nice",
        type=int,
        default=19,
        metavar="N",
        help="niceness of the load-generator processes and their sessions (default 19: "
        "the nodes come first, as on machines of their own; 0: the nodes' own)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the leader over the steady window and the ring changes; collapsed stacks here",
    )
    args = parser.parse_args()
    if args.changes < 1 or args.steady <= 0 or args.simulators < 1 or min(args.proxies) < 1:
        parser.error("--changes, --simulators and --proxies must be at least 1, --steady > 0")
    bench(args)


if __name__ == "__main__":
    main()
