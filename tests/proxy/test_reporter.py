"""HealthReporter against an in-process control plane (httpx.MockTransport): what it
sends, and when; and the routed epoch it reports, from the workers' metrics snapshots."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import httpx

from proxy.config import ProxyConfig, build
from proxy.health import BackendHealth
from proxy.metrics import ProxyMetrics
from proxy.reporter import EPOCH_REPORT_JITTER, HealthReporter, RoutedEpoch, proxy_identity
from proxy.telemetry import Snapshot
from ringleader.wire import NO_FORWARD, BackendObservation, HealthReport

# Long enough that a report sent quickly can only have been sent because of a change.
QUIET = replace(
    build({"backend": "memcached://h:1", "pool": "blue", "report-interval": 60}),
    backends=(), control=("http://c1:7000",), token="s3cret",
)  # fmt: skip
EPOCH_GAUGE = ProxyMetrics().ring_epoch.name


def worker_snapshot(epoch: int) -> Snapshot:
    """A worker's metrics snapshot once it has installed the ring at `epoch`."""
    metrics = ProxyMetrics()
    metrics.ring_epoch.labels().set(epoch)
    return metrics.set.snapshot()


class Plane:
    """Queues each request it receives and answers with `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.received: asyncio.Queue[httpx.Request] = asyncio.Queue()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await self.received.put(request)
        if self.status == 204:
            return httpx.Response(204)
        return httpx.Response(self.status, json={"error": "unauthorized", "message": "no"})

    async def request(self, within: float = 5.0) -> httpx.Request:
        async with asyncio.timeout(within):
            return await self.received.get()

    async def report(self, within: float = 5.0) -> HealthReport:
        return HealthReport.from_json(json.loads((await self.request(within)).content))


Scenario = Callable[[HealthReporter, Plane], Awaitable[None]]


def reporting(
    config: ProxyConfig, view: dict[str, BackendHealth], scenario: Scenario, status: int = 204,
    rng: random.Random | None = None,
) -> None:  # fmt: skip
    async def main() -> None:
        plane = Plane(status)
        reporter = HealthReporter(
            config, view, EPOCH_GAUGE, transport=httpx.MockTransport(plane.handle), rng=rng
        )
        task = asyncio.create_task(reporter.run())
        try:
            await scenario(reporter, plane)
        finally:
            task.cancel()
            await reporter.close()

    asyncio.run(main())


def test_a_report_is_the_probers_view_with_the_token() -> None:
    view = {
        "a": BackendHealth(state="up", since=5.0, rtt_seconds=0.001),
        "b": BackendHealth(state="down", since=6.0, last_error="refused", consecutive_failures=2),
        "c": BackendHealth(),
    }

    async def scenario(_: HealthReporter, plane: Plane) -> None:
        request = await plane.request()
        assert (request.method, request.url.path) == ("POST", "/v1/pools/blue/reports")
        assert request.headers["authorization"] == "Bearer s3cret"
        assert request.headers["x-ringleader-who"] == f"proxy:{proxy_identity(QUIET)}"
        report = HealthReport.from_json(json.loads(request.content))
        assert report == HealthReport(
            proxy=proxy_identity(QUIET),
            interval=60.0,
            backends={
                "a": BackendObservation("up", since=5.0, rtt_seconds=0.001),
                "b": BackendObservation(
                    "down", since=6.0, last_error="refused", consecutive_failures=2
                ),
                "c": BackendObservation("unknown"),
            },
        )

    reporting(QUIET, view, scenario)


def test_a_change_is_reported_at_once() -> None:
    view = {"a": BackendHealth(state="up", since=5.0)}

    async def scenario(reporter: HealthReporter, plane: Plane) -> None:
        assert (await plane.report()).backends["a"].state == "up"
        view["a"].state = "down"
        reporter.changed()
        assert (await plane.report(within=2.0)).backends["a"].state == "down"

    reporting(QUIET, view, scenario)


def test_without_changes_it_reports_every_interval() -> None:
    config = replace(QUIET, report_interval=0.1)

    async def scenario(_: HealthReporter, plane: Plane) -> None:
        loop = asyncio.get_running_loop()
        await plane.request()
        times = [loop.time()]
        for _report in range(3):
            await plane.request(within=2.0)
            times.append(loop.time())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.09 <= gap < 1.0 for gap in gaps), gaps

    reporting(config, {"a": BackendHealth(state="up")}, scenario)


def test_a_refused_report_does_not_stop_the_reports() -> None:
    view = {"a": BackendHealth(state="up")}

    async def scenario(reporter: HealthReporter, plane: Plane) -> None:
        await plane.request()
        view["a"].state = "down"
        reporter.changed()
        assert (await plane.report(within=2.0)).backends["a"].state == "down"

    reporting(QUIET, view, scenario, status=401)


def test_the_routed_epoch_is_the_lowest_any_worker_has_installed() -> None:
    routed = RoutedEpoch(EPOCH_GAUGE)
    assert routed.lowest is None
    assert not routed.worker_metrics(101, {})  # a snapshot without the gauge says nothing
    assert routed.lowest is None
    assert routed.worker_metrics(101, worker_snapshot(7))
    assert routed.worker_metrics(102, worker_snapshot(6))
    assert routed.lowest == 6
    assert not routed.worker_metrics(101, worker_snapshot(8))  # 102 still routes on 6
    assert routed.lowest == 6
    assert routed.worker_metrics(102, worker_snapshot(8))
    assert routed.lowest == 8
    assert routed.worker_metrics(103, worker_snapshot(5))
    assert routed.worker_exited(103)
    assert routed.lowest == 8
    assert not routed.worker_exited(103)


def test_a_report_goes_out_at_once_when_every_worker_routes_on_a_new_epoch() -> None:
    async def scenario(reporter: HealthReporter, plane: Plane) -> None:
        assert (await plane.report()).epoch is None  # no worker heard from yet
        reporter.worker_metrics(101, worker_snapshot(4))
        reporter.worker_metrics(102, worker_snapshot(4))
        assert (await plane.report(within=2.0)).epoch == 4
        reporter.worker_metrics(101, worker_snapshot(5))
        reporter.worker_metrics(102, worker_snapshot(5))
        assert (await plane.report(within=2.0)).epoch == 5

    reporting(QUIET, {"a": BackendHealth(state="up")}, scenario)


class FixedShare(random.Random):
    """Draws `share` of every range."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.share


def test_a_new_epochs_report_waits_its_random_delay_and_a_verdict_change_does_not() -> None:
    delay = 0.6 * EPOCH_REPORT_JITTER
    view = {"a": BackendHealth(state="up")}

    async def scenario(reporter: HealthReporter, plane: Plane) -> None:
        await plane.report()
        changed_at = time.monotonic()
        reporter.worker_metrics(101, worker_snapshot(4))
        assert (await plane.report(within=2.0)).epoch == 4
        assert delay <= time.monotonic() - changed_at < delay + 1.0
        # A verdict change goes out at once, and carries a pending new epoch with it.
        reporter.worker_metrics(101, worker_snapshot(5))
        view["a"] = BackendHealth(state="down")
        changed_at = time.monotonic()
        reporter.changed()
        report = await plane.report(within=2.0)
        assert (report.epoch, report.backends["a"].state) == (5, "down")
        assert time.monotonic() - changed_at < delay
        # The epoch's delayed report was dropped: that one carried it.
        assert plane.received.empty()
        await asyncio.sleep(EPOCH_REPORT_JITTER + 0.2)  # the window in which none may come
        assert plane.received.empty()

    reporting(QUIET, view, scenario, rng=FixedShare(0.6))


def test_reports_move_on_from_a_follower_and_stay_with_the_leader() -> None:
    """With several control URLs a report asks not to be forwarded; a follower's 503 moves
    the client on, and it stays with the node that took the report."""
    hosts: asyncio.Queue[str] = asyncio.Queue()

    async def control_plane(request: httpx.Request) -> httpx.Response:
        assert request.headers[NO_FORWARD] == "1"
        await hosts.put(request.url.host)
        if request.url.host == "follower":
            return httpx.Response(503, json={"error": "not_leader", "message": "not the leader"})
        return httpx.Response(204)

    async def main() -> list[str]:
        config = replace(QUIET, control=("http://follower:7000", "http://leader:7000"))
        reporter = HealthReporter(
            config, {"a": BackendHealth(state="up")}, EPOCH_GAUGE,
            transport=httpx.MockTransport(control_plane),
        )  # fmt: skip
        task = asyncio.create_task(reporter.run())
        try:
            async with asyncio.timeout(5.0):
                seen = [await hosts.get(), await hosts.get()]
                reporter.changed()
                seen.append(await hosts.get())
        finally:
            task.cancel()
            await reporter.close()
        return seen

    assert asyncio.run(main()) == ["follower", "leader", "leader"]
