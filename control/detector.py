"""The failure detector: turns proxies' health reports into ring changes, on the leader.

Rules (docs/invariants.md, invariants 1, 3 and 6):

- A backend is marked down when a quorum (by default a majority) of the proxies that have
  reported recently see it down. One proxy with a bad link cannot eject anything.
- It is marked up only after a quorum has seen it up continuously for `hysteresis`, and
  only after it was flushed (policy `flush`), so it cannot serve data from before.
- Never more than `max_eject_fraction` of a pool's active backends are down at once: many
  backends failing together usually means the proxies' network is sick, not the fleet.
- After gaining leadership it waits `warmup` for fresh reports before deciding anything,
  since reports held by the old leader are lost.

Cost: every proxy reports every couple of seconds, so the leader takes N/2 reports a second
from N proxies, and a report costs O(its backends), never O(proxies). Each pool keeps its
proxies in arrival order, so those past the TTL (or to be forgotten) are at the front, and
counts per backend the recent proxies that see it down and up; `decide` reads the counts and
scans the proxies only for a backend that a quorum already sees down (to name the evidence)
or up (to apply the hysteresis). `DetectorLoop` decides when a report changes what its
proxy's verdicts count for, and on a tick for what time alone changes (TTL expiry,
hysteresis, warmup, forgetting, the registry's own changes): never once per report.

`FailureDetector` is pure (time is passed in, and never goes back); `DetectorLoop` runs it
against a node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from control.commands import Health, SetHealth, Stamp, Stamped, command_to_bytes
from control.metrics import ControlMetrics, CounterChildren
from control.node import ProposalFailed, RaftNode
from control.raft.types import Role
from control.registry import AdminState, Outcome, Pool, Refused, Registry
from ringleader.backend_url import BackendSpec
from ringleader.backends import BackendError, ClientSettings, make_client
from ringleader.wire import Health as Verdict
from ringleader.wire import HealthReport, ProxiesDocument, ReportingProxy

log = logging.getLogger("ringleader.detector")

# A proxy silent for this many report TTLs is forgotten: proxy identities churn (every new
# pod is a new one), and the detector's memory of them must stay bounded.
FORGET_AFTER_TTLS = 10


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    quorum_fraction: float = 0.5  # more than this share of recent reporters must agree
    report_ttl: float = 6.0  # a proxy is "recent" if it reported within this many seconds
    hysteresis: float = 5.0  # seconds a quorum must see a backend up before it rejoins
    max_eject_fraction: float = 0.5
    rejoin_policy: Literal["flush", "none"] = "flush"

    @property
    def warmup(self) -> float:
        return self.report_ttl / 2


@dataclass(slots=True)
class _Observation:
    state: Verdict
    error: str | None
    proxy_since: float | None  # the proxy's wall clock, for the evidence only
    up_since: float | None  # our clock: when this proxy's view turned up, for hysteresis


@dataclass(slots=True)
class _ProxyReport:
    received_at: float
    epoch: int | None
    backends: dict[str, _Observation] = field(default_factory=dict)

    def same_verdicts(self, other: _ProxyReport) -> bool:
        theirs = other.backends
        return len(self.backends) == len(theirs) and all(
            name in theirs and theirs[name].state == seen.state
            for name, seen in self.backends.items()
        )


@dataclass(slots=True)
class _PoolReports:
    """One pool's latest report from each proxy, and the votes of the recent ones.

    Invariants: `recent` holds the reports at most `report_ttl` old as of the last `age`,
    `silent` the older ones not yet forgotten, each in arrival order (a proxy's new report
    moves it to the end of `recent`); `down[b]` and `up[b]` count the reports in `recent`
    that see backend b down and up.
    """

    recent: dict[str, _ProxyReport] = field(default_factory=dict)
    silent: dict[str, _ProxyReport] = field(default_factory=dict)
    down: Counter[str] = field(default_factory=Counter)
    up: Counter[str] = field(default_factory=Counter)

    def age(self, now: float, ttl: float, forget: float) -> None:
        """Moves the reports past `ttl` out of `recent` and forgets those past `forget`.
        Only the front of each is looked at: amortised O(1) per report."""
        while self.recent:
            proxy, report = next(iter(self.recent.items()))
            if now - report.received_at <= ttl:
                break
            del self.recent[proxy]
            self._count(report, -1)
            self.silent[proxy] = report
        while self.silent:
            proxy, report = next(iter(self.silent.items()))
            if now - report.received_at <= forget:
                break
            del self.silent[proxy]

    def take(self, proxy: str, report: _ProxyReport) -> bool:
        """Makes `report` the proxy's latest; True if that changed the votes (it was not
        recent, or some verdict changed)."""
        replaced = self.recent.pop(proxy, None)
        self.recent[proxy] = report
        if replaced is not None and report.same_verdicts(replaced):
            return False
        if replaced is not None:
            self._count(replaced, -1)
        self._count(report, +1)
        return True

    def previous(self, proxy: str) -> _ProxyReport | None:
        """The proxy's latest report, recent or silent. A silent one is dropped: the
        caller is about to `take` its successor."""
        return self.recent.get(proxy) or self.silent.pop(proxy, None)

    def _count(self, report: _ProxyReport, sign: int) -> None:
        for name, seen in report.backends.items():
            votes = self.down if seen.state == "down" else self.up
            votes[name] += sign
            if not votes[name]:
                del votes[name]


@dataclass(frozen=True, slots=True)
class Decision:
    pool: str
    backend: str
    health: Verdict
    why: str
    evidence: dict[str, Any]


class FailureDetector:
    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self._reports: dict[str, _PoolReports] = {}
        self._leader_since: float | None = None

    def lead(self, now: float) -> None:
        """This node became leader: forget everything and wait for fresh reports."""
        self._reports.clear()
        self._leader_since = now

    def follow(self) -> None:
        self._reports.clear()
        self._leader_since = None

    def report(self, pool: str, report: HealthReport, now: float) -> bool:
        """Takes a proxy's report; True if it changed what the proxy's verdicts count for
        (a verdict changed, or the proxy was not reporting), so `decide` may now differ."""
        reports = self._pool_reports(pool, now)
        previous = reports.previous(report.proxy)
        kept = _ProxyReport(received_at=now, epoch=report.epoch)
        for name, seen in report.backends.items():
            if seen.state == "unknown":
                continue
            old = previous.backends.get(name) if previous else None
            up_since = None
            if seen.state == "up":
                up_since = old.up_since if old and old.state == "up" and old.up_since else now
            kept.backends[name] = _Observation(
                state=seen.state,
                error=seen.last_error or None,
                proxy_since=seen.since,
                up_since=up_since,
            )
        return reports.take(report.proxy, kept)

    def reporting(self, pool: str, now: float) -> int:
        """How many proxies reported on `pool` within the TTL."""
        return len(self._pool_reports(pool, now).recent)

    def _pool_reports(self, pool: str, now: float) -> _PoolReports:
        reports = self._reports.setdefault(pool, _PoolReports())
        ttl = self.settings.report_ttl
        reports.age(now, ttl, ttl * FORGET_AFTER_TTLS)
        return reports

    def proxies(self, pool: str, now: float, wall_now: float) -> ProxiesDocument:
        """Every proxy remembered for `pool`, reporting or not; `wall_now` is the unix time
        at monotonic `now`, to date each last report."""
        reports = self._reports.get(pool) or _PoolReports()
        proxies = []
        for proxy, report in sorted({**reports.silent, **reports.recent}.items()):
            age = now - report.received_at
            verdicts = {name: seen.state for name, seen in report.backends.items()}
            proxies.append(ReportingProxy(proxy, wall_now - age, age, report.epoch, verdicts))
        return ProxiesDocument(pool, self.settings.report_ttl, tuple(proxies))

    def decide(self, pool: Pool, now: float) -> tuple[list[Decision], list[str]]:
        """The ring changes to commit now, and the backends held back by the ejection cap."""
        if self._leader_since is None or now - self._leader_since < self.settings.warmup:
            return [], []
        reports = self._pool_reports(pool.name, now)
        recent = reports.recent
        if not recent:
            return [], []
        need = math.floor(len(recent) * self.settings.quorum_fraction) + 1
        active = [b for b in pool.backends.values() if b.admin is AdminState.ACTIVE]
        already_down = sum(1 for b in active if b.health is Health.DOWN)
        allowed = math.floor(len(active) * self.settings.max_eject_fraction) - already_down
        decisions: list[Decision] = []
        held: list[str] = []
        for backend in active:
            if backend.health is Health.UP:
                if reports.down[backend.name] < need:
                    continue
                if allowed <= 0:
                    held.append(backend.name)
                    continue
                allowed -= 1
                voters = self._voters(recent, backend.name, "down", now)
                why = f"{len(voters)} of {len(recent)} reporting proxies see it down"
                decisions.append(Decision(pool.name, backend.name, "down", why, voters))
            elif reports.up[backend.name] >= need:
                voters = self._voters(recent, backend.name, "up", now)
                if len(voters) >= need:
                    why = (f"{len(voters)} of {len(recent)} reporting proxies saw it up for "
                           f"{self.settings.hysteresis:g}s")  # fmt: skip
                    decisions.append(Decision(pool.name, backend.name, "up", why, voters))
        return decisions, held

    def _voters(
        self, recent: dict[str, _ProxyReport], backend: str, state: Verdict, now: float
    ) -> dict[str, Any]:
        voters: dict[str, Any] = {}
        for proxy, report in recent.items():
            seen = report.backends.get(backend)
            if seen is None or seen.state != state:
                continue
            if state == "up" and (
                seen.up_since is None or now - seen.up_since < self.settings.hysteresis
            ):
                continue
            voters[proxy] = {"state": seen.state, "error": seen.error, "since": seen.proxy_since}
        return voters


Flush = Callable[[BackendSpec], Awaitable[None]]


async def flush_backend(spec: BackendSpec) -> None:
    client = make_client(spec, ClientSettings(connect_timeout=1.0, request_timeout=2.0))
    try:
        await client.flush()
    finally:
        await client.close()


class DetectorLoop:
    """Runs the detector on the leader and commits its decisions through Raft."""

    PERIOD = 0.1

    def __init__(
        self,
        node: RaftNode[Outcome],
        registry: Registry,
        detector: FailureDetector,
        metrics: ControlMetrics,
        flush: Flush = flush_backend,
    ) -> None:
        self._node = node
        self._registry = registry
        self._detector = detector
        self._metrics = metrics
        self._flush = flush
        self._wake = asyncio.Event()
        self._leading = False
        self._held: set[tuple[str, str]] = set()
        self._report_counters = CounterChildren(metrics.detector_reports)

    def report(self, pool: str, report: HealthReport) -> None:
        self._report_counters.labels(pool).inc()
        if self._detector.report(pool, report, time.monotonic()):
            self._wake.set()

    def proxies(self, pool: str) -> ProxiesDocument:
        return self._detector.proxies(pool, time.monotonic(), time.time())

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.PERIOD):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            leading = self._node.soft_state.role is Role.LEADER
            if leading != self._leading:
                self._leading = leading
                if leading:
                    self._detector.lead(time.monotonic())
                else:
                    self._detector.follow()
            if leading:
                await self._step()

    async def _step(self) -> None:
        now = time.monotonic()
        for pool in list(self._registry.pools.values()):
            self._metrics.detector_reporters.labels(pool.name).set(
                self._detector.reporting(pool.name, now)
            )
            decisions, held = self._detector.decide(pool, now)
            self._note_held(pool.name, held)
            for decision in decisions:
                await self._commit(pool, decision)

    def _note_held(self, pool: str, held: list[str]) -> None:
        for name in held:
            if (pool, name) not in self._held:
                self._metrics.detector_decisions.labels(pool, "held_by_cap").inc()
                log.warning(
                    "not ejecting %s: the pool is at its ejection cap", name,
                    extra={"ctx": {"pool": pool, "backend": name}},
                )  # fmt: skip
        self._held = {k for k in self._held if k[0] != pool} | {(pool, n) for n in held}

    async def _commit(self, pool: Pool, decision: Decision) -> None:
        backend = pool.backends[decision.backend]
        if decision.health == "up" and self._detector.settings.rejoin_policy == "flush":
            try:
                await self._flush(backend.spec())
            except BackendError as exc:
                self._metrics.detector_decisions.labels(pool.name, "flush_failed").inc()
                log.warning(
                    "not marking %s up: flush failed", backend.name,
                    extra={"ctx": {"pool": pool.name, "backend": backend.name,
                                   "error": str(exc)}},
                )  # fmt: skip
                return
        command = Stamped(
            SetHealth(pool.name, backend.name, Health(decision.health), decision.evidence),
            Stamp(time.time(), "detector", decision.why),
        )
        try:
            result = await self._node.propose(command_to_bytes(command))
        except ProposalFailed as exc:
            log.warning("decision not committed: %s", exc,
                        extra={"ctx": {"pool": pool.name, "backend": backend.name}})  # fmt: skip
            return
        if isinstance(result, Refused):
            log.warning("decision refused: %s", result.message,
                        extra={"ctx": {"pool": pool.name, "backend": backend.name}})  # fmt: skip
            return
        if result.unchanged:
            return
        self._metrics.detector_decisions.labels(pool.name, f"mark_{decision.health}").inc()
        log.warning(
            "marked %s %s", backend.name, decision.health,
            extra={"ctx": {"pool": pool.name, "backend": backend.name,
                           "epoch": result.epoch, "why": decision.why,
                           "evidence": decision.evidence}},
        )  # fmt: skip
