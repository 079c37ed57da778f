"""Heartbeats: the proxy's own view of each backend (memcached `version`, redis `PING`).

The view is evidence only (docs/invariants.md, invariant 1): a proxy never reroutes on what
it sees alone; it reports, and the control plane decides.

Each backend has its own probe loop. A failed probe is retried quickly, and the verdict
turns `down` only after `DOWN_AFTER` consecutive failures, so one lost packet is not an
outage. Errors in live traffic trigger an immediate probe rather than waiting a period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.metrics import ProxyMetrics
from ringleader.backend_url import BackendSpec
from ringleader.backends import BackendError, CacheClient, ClientSettings, make_client
from ringleader.wire import BackendObservation, ProbeState

log = logging.getLogger("ringleader.health")

DOWN_AFTER = 2
RETRY_AFTER_FAILURE = 0.1


@dataclass(slots=True)
class BackendHealth:
    state: ProbeState = "unknown"
    since: float = 0.0  # wall-clock time of the last verdict change
    last_error: str | None = None
    rtt_seconds: float | None = None
    consecutive_failures: int = 0

    def observation(self) -> BackendObservation:
        return BackendObservation(
            state=self.state,
            since=self.since or None,
            last_error=self.last_error,
            rtt_seconds=self.rtt_seconds,
            consecutive_failures=self.consecutive_failures,
        )


@dataclass(slots=True)
class _Probe:
    client: CacheClient
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class HealthProber:
    def __init__(
        self,
        metrics: ProxyMetrics,
        interval: float,
        timeout: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._metrics = metrics
        self._interval = interval
        self._on_change = on_change
        # Probes get their own connections so a busy data path cannot delay them.
        self._settings = ClientSettings(
            connect_timeout=timeout,
            request_timeout=timeout,
            reconnect_backoff_min=RETRY_AFTER_FAILURE / 4,
            reconnect_backoff_max=min(interval, RETRY_AFTER_FAILURE) / 2,
        )
        self._probes: dict[BackendSpec, _Probe] = {}
        self.view: dict[str, BackendHealth] = {}

    async def watch(self, backends: tuple[BackendSpec, ...]) -> None:
        """Probe exactly `backends` from now on."""
        for spec in list(self._probes):
            if spec not in backends:
                await self._stop(spec)
                self.view.pop(spec.name, None)
                self._metrics.backend_up.remove(spec.name)
        for spec in backends:
            if spec not in self._probes:
                probe = self._probes[spec] = _Probe(make_client(spec, self._settings))
                self.view[spec.name] = BackendHealth()
                probe.task = asyncio.create_task(self._loop(spec, probe), name=f"probe-{spec.name}")

    def probe_now(self, name: str) -> None:
        for spec, probe in self._probes.items():
            if spec.name == name:
                probe.wake.set()

    async def _loop(self, spec: BackendSpec, probe: _Probe) -> None:
        while True:
            await self._probe(spec, probe.client)
            health = self.view[spec.name]
            failing = 0 < health.consecutive_failures < DOWN_AFTER
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_AFTER_FAILURE if failing else self._interval):
                    await probe.wake.wait()
            probe.wake.clear()

    async def _probe(self, spec: BackendSpec, client: CacheClient) -> None:
        started = time.perf_counter()
        try:
            await client.ping()
        except BackendError as exc:
            self._record(spec, None, exc.detail)
        else:
            rtt = time.perf_counter() - started
            self._metrics.probe_duration.labels(spec.name).observe(rtt)
            self._record(spec, rtt, None)

    def _record(self, spec: BackendSpec, rtt: float | None, error: str | None) -> None:
        health = self.view[spec.name]
        health.rtt_seconds = rtt
        health.last_error = error
        health.consecutive_failures = 0 if error is None else health.consecutive_failures + 1
        state: ProbeState
        if error is None:
            state = "up"
        elif health.consecutive_failures >= DOWN_AFTER:
            state = "down"
        else:
            return  # not yet a verdict
        self._metrics.backend_up.labels(spec.name).set(1.0 if state == "up" else 0.0)
        if state == health.state:
            return
        log.log(
            logging.INFO if state == "up" else logging.WARNING,
            "backend %s is %s", spec.name, state,
            extra={"ctx": {"backend": spec.name, "address": spec.address, "state": state,
                           "previous": health.state, "error": error}},
        )  # fmt: skip
        health.state = state
        health.since = time.time()
        self._on_change()

    async def _stop(self, spec: BackendSpec) -> None:
        probe = self._probes.pop(spec)
        if probe.task is not None:
            probe.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe.task
        await probe.client.close()

    async def close(self) -> None:
        for spec in list(self._probes):
            await self._stop(spec)
