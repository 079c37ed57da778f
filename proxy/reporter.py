"""Reports the proxy's view of its backends, and the ring epoch it routes on, to the
control plane's failure detector.

A report goes out at once when a verdict changes, within a random delay of at most
EPOCH_REPORT_JITTER when the routed epoch changes, and at least every `interval` otherwise:
the detector can tell a proxy with nothing to say from one that is gone, and `--wait` learns
of a new ring soon after every worker routes on it. The delay is there because a new epoch
reaches every proxy of a fleet at once: the leader takes their reports spread out, not as
one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from urllib.parse import quote

import httpx

from proxy.config import ProxyConfig
from proxy.health import BackendHealth
from proxy.telemetry import Snapshot
from ringleader.control_client import ControlClient, ControlError
from ringleader.wire import NO_FORWARD, HealthReport

log = logging.getLogger("ringleader.reporter")

EPOCH_REPORT_JITTER = 0.5  # seconds, at most, between a new routed epoch and its report


def proxy_identity(config: ProxyConfig) -> str:
    """Stable across restarts of the same proxy, distinct between proxies: the host and
    its first front's address (the HTTP one when it is on)."""
    return f"{socket.gethostname()}/{config.fronts[0][1]}"


class RoutedEpoch:
    """The ring epoch the proxy routes on: the lowest its workers have installed, as the
    `epoch_gauge` of their metrics snapshots says (a worker sets it after installing a ring).

    A worker not heard from yet is left out: it was spawned with the supervisor's newest
    ring, at or above every epoch another worker has installed, so the lowest of the rest is
    still one that every worker routes on or above. None until some worker is heard from.
    """

    def __init__(self, epoch_gauge: str) -> None:
        self._gauge = epoch_gauge
        self._workers: dict[int, int] = {}

    @property
    def lowest(self) -> int | None:
        return min(self._workers.values(), default=None)

    def worker_metrics(self, pid: int, snapshot: Snapshot) -> bool:
        """Takes a worker's snapshot; True if the lowest epoch changed."""
        sample = snapshot.get(self._gauge, {}).get(())
        if not sample:
            return False
        before = self.lowest
        self._workers[pid] = int(sample[0])
        return self.lowest != before

    def worker_exited(self, pid: int) -> bool:
        """True if the lowest epoch changed."""
        before = self.lowest
        self._workers.pop(pid, None)
        return self.lowest != before


class HealthReporter:
    def __init__(
        self,
        config: ProxyConfig,
        view: dict[str, BackendHealth],
        epoch_gauge: str,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = ControlClient(
            list(config.control), config.token, timeout=2.0, deadline=2.0, transport=transport
        )
        self._path = f"/v1/pools/{quote(config.pool, safe='')}/reports"
        self._identity = proxy_identity(config)
        self._view = view
        self._routed = RoutedEpoch(epoch_gauge)
        self._interval = config.report_interval
        self._wake = asyncio.Event()
        self._failing = False
        self._rng = rng or random.Random()
        self._epoch_report: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        self._wake.set()

    def worker_metrics(self, pid: int, snapshot: Snapshot) -> None:
        """A worker's metrics snapshot, which carries the epoch it routes on."""
        if self._routed.worker_metrics(pid, snapshot):
            self._epoch_changed()

    def worker_exited(self, pid: int) -> None:
        if self._routed.worker_exited(pid):
            self._epoch_changed()

    def _epoch_changed(self) -> None:
        if self._epoch_report is None:
            delay = self._rng.uniform(0.0, EPOCH_REPORT_JITTER)
            self._epoch_report = asyncio.get_running_loop().call_later(delay, self._wake.set)

    def report(self) -> HealthReport:
        return HealthReport(
            proxy=self._identity,
            backends={name: h.observation() for name, h in self._view.items()},
            interval=self._interval,
            epoch=self._routed.lowest,
        )

    async def run(self) -> None:
        headers = {"x-ringleader-who": f"proxy:{self._identity}"}
        if len(self._client.urls) > 1:
            headers[NO_FORWARD] = "1"  # a follower turns it away: the client moves on
        while True:
            self._wake.clear()
            if self._epoch_report is not None:
                self._epoch_report.cancel()  # this report carries the epoch already
                self._epoch_report = None
            body = self.report().to_json()
            try:
                await self._client.request("POST", self._path, json=body, headers=headers)
            except ControlError as exc:
                if not self._failing:
                    log.warning("cannot report backend health", extra={"ctx": {"error": str(exc)}})
                self._failing = True
            else:
                self._failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def close(self) -> None:
        if self._epoch_report is not None:
            self._epoch_report.cancel()
        await self._client.close()
