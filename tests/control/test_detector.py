"""The failure detector's rules, on pure inputs: reports, a pool, and the time."""

from __future__ import annotations

import asyncio

import pytest

from control.commands import Health, SetHealth, command_from_bytes
from control.detector import FORGET_AFTER_TTLS, DetectorLoop, DetectorSettings, FailureDetector
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
