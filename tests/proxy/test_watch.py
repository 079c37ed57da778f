"""RingWatcher against a scripted control plane (httpx.MockTransport): which rings it
installs, and that it keeps the last one while the plane is away (static stability)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx

from proxy.router import RingState
from proxy.telemetry import GaugeChild
from proxy.watch import RingWatcher
from ringleader.control_client import node_for
from ringleader.wire import ActiveMember, Health, RingDocument, RingMember

CONTROL = ["http://c1:7000", "http://c2:7000"]
Step = Callable[[httpx.Request], httpx.Response]


class NoJitter(random.Random):
    """Backoff without waiting, so a test runs at the speed of its script; `bounds` holds
    each backoff the watcher drew from."""

    def __init__(self) -> None:
        super().__init__()
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append(b)
        return a


def member(name: str, port: int) -> RingMember:
    return RingMember(name, f"memcached://10.0.0.1:{port}?name={name}", 1)


def ring(epoch: int, *down: str) -> Step:
    members = (member("a", 1), member("b", 2))
    health: dict[str, Health] = {m.name: "down" if m.name in down else "up" for m in members}
    document = RingDocument(
        pool="default", epoch=epoch, hash="fnv1a_64", distribution="ketama", replicas=1,
        backends=tuple(m for m in members if health[m.name] == "up"),
        active=tuple(ActiveMember(m.name, m.url, m.weight, health[m.name]) for m in members),
    )  # fmt: skip
    return lambda _: httpx.Response(200, json=document.to_json())


def answer(status: int, body: Any) -> Step:
    return lambda _: httpx.Response(status, json=body)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class Plane:
    """Answers each request with the next step; once the script is done, the watch hangs
    as a long-poll with no news does, and `done` is set."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.done = asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            self.done.set()
            await asyncio.Event().wait()
        return self.steps.pop(0)(request)


class Run:
    def __init__(self, plane: Plane, spread_by: str | None = None) -> None:
        self.installed: list[RingState] = []
        self.control_up = GaugeChild()
        self.control_up.set(-1.0)  # neither up nor down until the watcher says so
        self.rng = NoJitter()
        self.watcher = RingWatcher(
            CONTROL, "default", self.installed.append, self.control_up,
            rng=self.rng, transport=httpx.MockTransport(plane.handle), spread_by=spread_by,
        )  # fmt: skip


def play(*steps: Step, spread_by: str | None = None) -> tuple[Run, Plane]:
    """Runs a watcher until the plane's script is played out."""

    async def scenario() -> tuple[Run, Plane]:
        plane = Plane(*steps)
        run = Run(plane, spread_by)
        task = asyncio.create_task(run.watcher.run())
        try:
            async with asyncio.timeout(10):
                await plane.done.wait()
        finally:
            task.cancel()
            await run.watcher.close()
        return run, plane

    return asyncio.run(scenario())


def params(plane: Plane) -> list[tuple[str, str]]:
    return [(r.url.params["wait_epoch"], r.url.params["timeout"]) for r in plane.requests]


def test_it_installs_only_rings_newer_than_the_one_it_has() -> None:
    run, plane = play(ring(3), ring(3), ring(2), ring(5))
    assert [state.epoch for state in run.installed] == [3, 5]
    assert run.watcher.epoch == 5
    # Each long-poll waits for an epoch past the newest installed one.
    assert [epoch for epoch, _ in params(plane)] == ["-1", "3", "3", "3", "5"]
    assert run.control_up.value == 1.0
    assert run.watcher.received_first.is_set()


def test_the_ring_state_comes_from_the_document() -> None:
    run, _ = play(ring(3), ring(4, "b"))
    first, second = run.installed
    assert (first.hash_name, [b.name for b in first.backends], first.owners) == (
        "fnv1a_64", ["a", "b"], (),
    )  # fmt: skip
    # While b is down, the owners (every active backend) say where its keys belong.
    assert [b.name for b in second.backends] == ["a"]
    assert [b.name for b in second.owners] == ["a", "b"]


def test_a_document_from_a_node_without_versions_is_read() -> None:
    document = {
        "pool": "default", "epoch": 4, "hash": "md5", "distribution": "ketama", "replicas": 1,
        "backends": [member("a", 1).to_json()],
    }  # fmt: skip
    run, _ = play(answer(200, document))
    assert [(s.epoch, s.hash_name) for s in run.installed] == [(4, "md5")]


def test_it_keeps_the_last_ring_while_the_control_plane_fails() -> None:
    run, plane = play(
        ring(3),
        answer(503, {"error": "no_leader", "message": "no leader"}),
        refused,
        answer(503, {"error": "not_caught_up", "message": "behind"}),
    )
    assert [state.epoch for state in run.installed] == [3]
    assert run.watcher.epoch == 3
    assert run.control_up.value == 0.0
    assert run.watcher.last_error is not None
    assert "control plane unavailable" in run.watcher.last_error
    # It tries the other node each time, and asks without waiting while failing.
    hosts = [r.url.host for r in plane.requests]
    assert hosts == ["c1", "c1", "c2", "c1", "c2"]
    assert params(plane)[2:] == [("3", "0.0")] * 3


def test_it_backs_off_to_seconds_when_nothing_answers_but_stays_close_through_an_election() -> (
    None
):
    no_leader = answer(503, {"error": "no_leader", "message": "no leader is known"})
    run, _ = play(ring(3), *[refused] * 7, *[no_leader] * 3, refused, refused, no_leader)
    # Unreachable: doubling up to BACKOFF_MAX. Answered 503s: at most ANSWERED_BACKOFF_MAX,
    # at once; unreachable again doubles from there; a 503 caps it again.
    assert run.rng.bounds == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    assert [state.epoch for state in run.installed] == [3]


def test_it_recovers_when_the_control_plane_is_back() -> None:
    run, plane = play(ring(3), refused, refused, ring(3), ring(6))
    assert [state.epoch for state in run.installed] == [3, 6]
    assert run.control_up.value == 1.0
    assert run.watcher.last_error is None
    # Once answered, it goes back to long-polling.
    assert params(plane)[4:] == [("3", "25.0"), ("6", "25.0")]


def test_a_malformed_ring_is_refused_and_the_last_ring_kept() -> None:
    bad = {
        "pool": "default", "epoch": 9, "hash": "fnv1a_64", "distribution": "ketama",
        "replicas": 1, "backends": [{"name": "a", "url": "memcached://a", "weight": 0}],
    }  # fmt: skip
    run, _ = play(ring(3), answer(200, bad))
    assert [state.epoch for state in run.installed] == [3]
    assert run.control_up.value == 0.0
    assert run.watcher.last_error == (
        "ring document: backends[0].weight: expected a positive integer, got 0"
    )


def test_no_ring_means_the_first_is_not_received() -> None:
    run, _ = play(refused, refused)
    assert run.installed == []
    assert not run.watcher.received_first.is_set()
    assert run.watcher.epoch == -1


def test_spread_by_identity_starts_the_watch_at_the_node_it_hashes_to() -> None:
    keys = [f"cache-{i}/10.0.0.{i}:8080" for i in range(20)]
    second = next(k for k in keys if node_for(k, len(CONTROL)) == 1)
    _, plane = play(ring(3), ring(4), spread_by=second)
    # Every long-poll goes there while it answers: the watch stays where it started.
    assert [r.url.host for r in plane.requests] == ["c2", "c2", "c2"]
    first = next(k for k in keys if node_for(k, len(CONTROL)) == 0)
    _, plane = play(ring(3), spread_by=first)
    assert [r.url.host for r in plane.requests] == ["c1", "c1"]


def test_a_spread_watch_moves_on_when_its_node_fails() -> None:
    keys = [f"cache-{i}/10.0.0.{i}:8080" for i in range(20)]
    second = next(k for k in keys if node_for(k, len(CONTROL)) == 1)
    run, plane = play(refused, ring(3), ring(5), spread_by=second)
    assert [state.epoch for state in run.installed] == [3, 5]
    assert [r.url.host for r in plane.requests] == ["c2", "c1", "c1", "c1"]
