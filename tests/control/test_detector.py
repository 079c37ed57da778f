"""The failure detector's rules, on pure inputs: reports, a pool, and the time."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from control.commands import Health, SetHealth, command_from_bytes
from control.detector import (
    FORGET_AFTER_TTLS,
    Decision,
    DetectorLoop,
    DetectorSettings,
    FailureDetector,
)
from control.metrics import ControlMetrics
from control.raft.types import Role, SoftState
from control.registry import Applied, Backend, Outcome, Pool
from ringleader.backend_url import BackendSpec
from ringleader.backends import BackendUnavailable
from ringleader.wire import (
    BackendObservation,
    HealthReport,
    ProbeState,
    ProxiesDocument,
    ReportingProxy,
)

SETTINGS = DetectorSettings(report_ttl=6.0, hysteresis=5.0, max_eject_fraction=0.5)


def pool(*names: str, down: tuple[str, ...] = ()) -> Pool:
    p = Pool("default")
    for name in names:
        p.backends[name] = Backend(name, f"memcached://{name}:11211?name={name}", 1)
        if name in down:
            p.backends[name].health = Health.DOWN
    return p


def seen(proxy: str, **states: ProbeState) -> HealthReport:
    return HealthReport(
        proxy, {name: BackendObservation(state, since=1.0) for name, state in states.items()}
    )


def leading_detector(now: float = 0.0) -> FailureDetector:
    detector = FailureDetector(SETTINGS)
    detector.lead(now)
    return detector


def test_a_majority_of_reporting_proxies_marks_a_backend_down() -> None:
    detector = leading_detector()
    detector.report("default", seen("p1", a="up", b="down"), 10.0)
    detector.report("default", seen("p2", a="up", b="down"), 10.0)
    detector.report("default", seen("p3", a="up", b="up"), 10.0)
    decisions, held = detector.decide(pool("a", "b", "c", "d"), 10.0)
    assert [(d.backend, d.health) for d in decisions] == [("b", "down")]
    assert set(decisions[0].evidence) == {"p1", "p2"}
    assert held == []


def test_the_proxies_view_dates_each_report_and_keeps_its_epoch_and_verdicts() -> None:
    detector = leading_detector()
    detector.report("default", seen("p2", a="up", b="down", c="unknown"), 10.0)
    detector.report("default", HealthReport("p1", {"a": BackendObservation("up")}, epoch=9), 12.0)
    detector.report("other", seen("p3", a="up"), 12.0)
    p1 = ReportingProxy("p1", last_seen=999.0, age_seconds=1.0, epoch=9, verdicts={"a": "up"})
    p2 = ReportingProxy("p2", 997.0, 3.0, None, {"a": "up", "b": "down"})  # "c" is unknown
    view = detector.proxies("default", now=13.0, wall_now=1000.0)
    assert view == ProxiesDocument("default", SETTINGS.report_ttl, (p1, p2))
    assert detector.proxies("unknown", 13.0, 1000.0).proxies == ()


def test_a_long_silent_proxy_is_forgotten() -> None:
    detector = leading_detector()
    detector.report("default", seen("gone", a="up"), 0.0)
    detector.report("default", seen("kept", a="up"), 1.0)
    later = SETTINGS.report_ttl * FORGET_AFTER_TTLS + 0.5
    assert len(detector.proxies("default", later, later).proxies) == 2
    detector.report("default", seen("new", a="up"), later)
    names = [p.proxy for p in detector.proxies("default", later, later).proxies]
    assert names == ["kept", "new"]


def test_one_proxy_of_two_is_not_a_quorum() -> None:
    detector = leading_detector()
    detector.report("default", seen("p1", a="down"), 10.0)
    detector.report("default", seen("p2", a="up"), 10.0)
    assert detector.decide(pool("a", "b"), 10.0) == ([], [])


def test_reports_older_than_the_ttl_do_not_count() -> None:
    detector = leading_detector()
    detector.report("default", seen("gone", a="down"), 1.0)
    detector.report("default", seen("live", a="up"), 9.0)
    # Only "live" is recent at t=9: one reporter, who sees `a` up.
    assert detector.decide(pool("a", "b"), 9.0) == ([], [])
    detector.report("default", seen("live", a="down"), 9.5)
    decisions, _ = detector.decide(pool("a", "b"), 9.5)
    assert [d.backend for d in decisions] == ["a"]


def test_never_more_than_the_cap_is_ejected() -> None:
    detector = leading_detector()
    for proxy in ("p1", "p2"):
        detector.report("default", seen(proxy, a="down", b="down", c="up"), 10.0)
    decisions, held = detector.decide(pool("a", "b", "c"), 10.0)
    assert len(decisions) == 1  # floor(3 * 0.5) = 1
    assert held == ["b"]
    # With one already down, nothing more goes.
    decisions, held = detector.decide(pool("a", "b", "c", down=("a",)), 10.0)
    assert decisions == []
    assert held == ["b"]


def test_a_new_leader_waits_for_fresh_reports() -> None:
    detector = FailureDetector(SETTINGS)
    detector.lead(100.0)
    for proxy in ("p1", "p2"):
        detector.report("default", seen(proxy, a="down"), 100.5)
    assert detector.decide(pool("a", "b"), 100.5) == ([], [])  # inside the warmup
    decisions, _ = detector.decide(pool("a", "b"), 100.0 + SETTINGS.warmup)
    assert [d.backend for d in decisions] == ["a"]
    detector.follow()
    assert detector.decide(pool("a", "b"), 200.0) == ([], [])


def test_mark_up_needs_a_quorum_seeing_it_up_for_the_whole_hysteresis() -> None:
    detector = leading_detector()
    p = pool("a", "b", down=("a",))
    for t in (10.0, 12.0):
        for proxy in ("p1", "p2"):
            detector.report("default", seen(proxy, a="up"), t)
    assert detector.decide(p, 14.9) == ([], [])  # up since 10.0, not yet 5 s
    # A flap on one proxy restarts its clock; the other alone is not a quorum of two.
    detector.report("default", seen("p2", a="down"), 14.95)
    detector.report("default", seen("p2", a="up"), 15.0)
    assert detector.decide(p, 15.0) == ([], [])
    decisions, _ = detector.decide(p, 20.0)
    assert [(d.backend, d.health) for d in decisions] == [("a", "up")]


def test_a_report_says_whether_it_changed_what_its_proxy_counts_for() -> None:
    detector = leading_detector()
    assert detector.report("default", seen("p1", a="up", b="down"), 1.0)  # a new proxy
    assert not detector.report("default", seen("p1", a="up", b="down"), 2.0)
    assert detector.report("default", seen("p1", a="up", b="up"), 3.0)
    assert detector.report("default", seen("p1", a="up", b="up", c="down"), 4.0)
    assert detector.report("default", seen("p1", a="up", b="up", c="unknown"), 5.0)
    # Back after the TTL: its verdicts count again.
    assert detector.report("default", seen("p1", a="up", b="up"), 5.0 + SETTINGS.report_ttl + 1)


def decide_by_scanning(
    latest: dict[str, tuple[float, dict[str, tuple[ProbeState, float | None]]]],
    p: Pool,
    now: float,
) -> list[tuple[str, str, frozenset[str]]]:
    """The detector's rules read straight off every proxy's latest report (`latest`: proxy
    -> (received at, backend -> (state, up since))), for the counting detector to match."""
    recent = {k: v for k, v in latest.items() if now - v[0] <= SETTINGS.report_ttl}
    if not recent:
        return []
    need = math.floor(len(recent) * SETTINGS.quorum_fraction) + 1
    active = list(p.backends.values())
    allowed = math.floor(len(active) * SETTINGS.max_eject_fraction) - sum(
        1 for b in active if b.health is Health.DOWN
    )
    out = []
    for b in active:
        want = "down" if b.health is Health.UP else "up"
        voters = frozenset(
            proxy
            for proxy, (_, states) in recent.items()
            if states.get(b.name, ("unknown", None))[0] == want
            and (want == "down" or now - (states[b.name][1] or now) >= SETTINGS.hysteresis)
        )
        if len(voters) >= need and (want == "up" or allowed > 0):
            allowed -= want == "down"
            out.append((b.name, want, voters))
    return out


def test_counted_votes_decide_as_a_scan_of_every_report_would(seed: int) -> None:
    rng = random.Random(seed)
    detector = leading_detector()
    names = ["a", "b", "c", "d"]
    verdicts: list[ProbeState] = ["up", "down", "unknown"]
    latest: dict[str, tuple[float, dict[str, tuple[ProbeState, float | None]]]] = {}
    now = SETTINGS.warmup
    for _ in range(3000):
        now += rng.expovariate(10.0)
        proxy = f"p{rng.randrange(12)}"
        states = {n: rng.choices(verdicts, [8, 2, 1])[0] for n in names}
        if proxy in latest and rng.random() < 0.7:  # mostly the same as last time
            states = {n: s for n, (s, _) in latest[proxy][1].items()}
        detector.report("default", seen(proxy, **states), now)
        before = latest.get(proxy, (now, {}))[1]
        latest[proxy] = (now, {
            n: (s, (before[n][1] if n in before and before[n][0] == "up" else now)
                if s == "up" else None)
            for n, s in states.items() if s != "unknown"
        })  # fmt: skip
        p = pool(*names, down=tuple(rng.sample(names, rng.randrange(3))))
        decisions, _ = detector.decide(p, now)
        got = [(d.backend, d.health, frozenset(d.evidence)) for d in decisions]
        assert got == decide_by_scanning(latest, p, now), f"at t={now:.2f}"


class FakeNode:
    """What DetectorLoop uses of a RaftNode: its role, its registry and propose()."""

    def __init__(self, backends: Pool) -> None:
        self.soft_state = SoftState(Role.LEADER, 1, 1)
        self.registry = type("Registry", (), {"pools": {"default": backends}})()
        self.proposed: list[bytes] = []

    async def propose(self, command: bytes) -> Outcome:
        self.proposed.append(command)
        return Applied(9)


@pytest.mark.parametrize("flush_works", [True, False])
def test_a_backend_rejoins_only_after_a_successful_flush(flush_works: bool) -> None:
    flushed: list[str] = []

    async def flush(spec: BackendSpec) -> None:
        flushed.append(spec.name)
        if not flush_works:
            raise BackendUnavailable(spec.name, "connection refused")

    async def scenario() -> FakeNode:
        node = FakeNode(pool("a", "b", down=("a",)))
        detector = FailureDetector(DetectorSettings(hysteresis=0.0, report_ttl=0.2))
        loop = DetectorLoop(node, node.registry, detector, ControlMetrics(), flush)  # type: ignore[arg-type]
        task = asyncio.create_task(loop.run())
        try:
            async with asyncio.timeout(5):
                while len(flushed) < 2:
                    loop.report("default", seen("p1", a="up"))
                    await asyncio.sleep(0.05)  # reports arrive periodically, as proxies send them
        finally:
            task.cancel()
        return node

    node = asyncio.run(scenario())
    assert flushed[0] == "a"
    if flush_works:
        assert node.proposed
        proposed = command_from_bytes(node.proposed[0]).command
        assert isinstance(proposed, SetHealth)
        assert proposed.health is Health.UP
    else:
        assert node.proposed == []


class CountingDetector(FailureDetector):
    def __init__(self, settings: DetectorSettings) -> None:
        super().__init__(settings)
        self.decided = 0

    def decide(self, pool: Pool, now: float) -> tuple[list[Decision], list[str]]:
        self.decided += 1
        return super().decide(pool, now)


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Polls `predicate` every 10 ms until it holds; fails after 5 s."""
    deadline = time.monotonic() + 5.0
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within 5 s: {what}")
        await asyncio.sleep(0.01)


def proposed(node: FakeNode) -> list[tuple[str, Health]]:
    commands = [command_from_bytes(c).command for c in node.proposed]
    return [(c.backend, c.health) for c in commands if isinstance(c, SetHealth)]


async def run_loop(
    node: FakeNode, detector: FailureDetector, body: Callable[[DetectorLoop], Awaitable[None]]
) -> None:
    async def flush(spec: BackendSpec) -> None:
        pass

    loop = DetectorLoop(node, node.registry, detector, ControlMetrics(), flush)  # type: ignore[arg-type]
    task = asyncio.create_task(loop.run())
    try:
        await body(loop)
    finally:
        task.cancel()


def test_unchanged_reports_from_a_thousand_proxies_decide_nothing() -> None:
    node = FakeNode(pool("a", "b", "c", "d"))
    detector = CountingDetector(SETTINGS)

    async def body(loop: DetectorLoop) -> None:
        loop.PERIOD = 3600.0  # no ticks: every decision below is one a report woke
        loop.report("default", seen("first", a="up"))
        await until(lambda: detector.decided == 1, "the first report to wake the loop")
        for rounds in range(4):
            if rounds == 1:
                after_first_round = detector.decided
            for i in range(1000):
                loop.report("default", seen(f"p{i}", a="up", b="up", c="up", d="down"))
                await asyncio.sleep(0)  # lets a woken loop run between any two reports
        assert after_first_round > 1  # new proxies count: each woke it
        assert detector.decided == after_first_round  # 3,000 unchanged reports: none
        loop.report("default", seen("p7", a="up", b="up", c="down", d="down"))
        await until(lambda: detector.decided == after_first_round + 1, "a changed verdict")

    asyncio.run(run_loop(node, detector, body))


FAST = DetectorSettings(report_ttl=0.6, hysteresis=0.4, max_eject_fraction=0.5)


async def keep_reporting(
    loop: DetectorLoop, reports: list[HealthReport], sent: list[float] | None = None
) -> None:
    """Sends `reports` every 50 ms, as proxies do periodically; notes each round in `sent`."""
    while True:
        for report in reports:
            loop.report("default", report)
        if sent is not None:
            sent.append(time.monotonic())
        await asyncio.sleep(0.05)


async def first_proposal(
    loop: DetectorLoop, node: FakeNode, fleet: list[HealthReport], what: str
) -> tuple[str, Health]:
    """Keeps `fleet` reporting until the detector proposes a change; the first one."""
    reporting = asyncio.create_task(keep_reporting(loop, fleet))
    try:
        await until(lambda: proposed(node) != [], what)
    finally:
        reporting.cancel()
    return proposed(node)[0]


def test_unchanged_reports_eject_once_the_warmup_ends() -> None:
    node = FakeNode(pool("a", "b", "c"))
    detector = CountingDetector(FAST)

    async def body(loop: DetectorLoop) -> None:
        started = time.monotonic()
        fleet = [seen("p1", a="down"), seen("p2", a="down"), seen("p3", a="up")]
        assert await first_proposal(loop, node, fleet, "a decision") == ("a", Health.DOWN)
        assert time.monotonic() - started >= FAST.warmup

    asyncio.run(run_loop(node, detector, body))


def test_a_quorum_left_by_silent_proxies_ejects_on_the_tick() -> None:
    node = FakeNode(pool("a", "b", "c"))
    detector = CountingDetector(FAST)

    async def body(loop: DetectorLoop) -> None:
        fleet = [seen("p1", a="down"), seen("p2", a="up"), seen("p3", a="up")]
        sent: list[float] = []
        reporting = asyncio.create_task(keep_reporting(loop, fleet, sent))
        await asyncio.sleep(2 * FAST.report_ttl)  # the window in which nothing may happen
        reporting.cancel()
        assert proposed(node) == []
        # p2 and p3 fall silent: after the TTL p1 alone is the quorum, with nothing new said.
        assert await first_proposal(loop, node, fleet[:1], "the ejection") == ("a", Health.DOWN)
        assert time.monotonic() - sent[-1] > FAST.report_ttl  # p2's and p3's last report

    asyncio.run(run_loop(node, detector, body))


def test_unchanged_reports_rejoin_once_the_hysteresis_passes() -> None:
    node = FakeNode(pool("a", "b", "c", down=("a",)))
    detector = CountingDetector(FAST)

    async def body(loop: DetectorLoop) -> None:
        started = time.monotonic()
        fleet = [seen("p1", a="up"), seen("p2", a="up"), seen("p3", a="down")]
        assert await first_proposal(loop, node, fleet, "the rejoin") == ("a", Health.UP)
        # Counted from leading at the earliest: up since then, and the hysteresis after.
        assert time.monotonic() - started >= max(FAST.warmup, FAST.hysteresis)

    asyncio.run(run_loop(node, detector, body))
