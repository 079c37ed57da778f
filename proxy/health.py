"""Heartbeats: the proxy's own view of each backend (memcached `version`, redis `PING`).

The view is evidence only. Invariant 1 of DESIGN.md: a proxy never reroutes on what it sees
alone; it reports, and the control plane decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from proxy.backend_url import BackendSpec
from proxy.backends import BackendError, CacheClient, ClientSettings, make_client
from proxy.metrics import ProxyMetrics

log = logging.getLogger("ringleader.health")


@dataclass(slots=True)
class BackendHealth:
    state: str = "unknown"  # unknown | up | down
    since: float = 0.0  # wall-clock time of the last state change
    last_error: str | None = None
    rtt_seconds: float | None = None
    consecutive_failures: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "since": self.since or None,
            "last_error": self.last_error,
            "rtt_seconds": self.rtt_seconds,
            "consecutive_failures": self.consecutive_failures,
        }


class HealthProber:
    def __init__(self, metrics: ProxyMetrics, interval: float, timeout: float) -> None:
        self._metrics = metrics
        self._interval = interval
        # Probes get their own connections so a busy data path cannot delay them.
        self._settings = ClientSettings(
            connect_timeout=timeout, request_timeout=timeout, reconnect_backoff_max=interval / 2
        )
        self._clients: dict[BackendSpec, CacheClient] = {}
        self.view: dict[str, BackendHealth] = {}

    async def watch(self, backends: tuple[BackendSpec, ...]) -> None:
        """Probe exactly `backends` from now on."""
        for spec in list(self._clients):
            if spec not in backends:
                await self._clients.pop(spec).close()
                self.view.pop(spec.name, None)
                self._metrics.backend_up.remove(spec.name)
        for spec in backends:
            if spec not in self._clients:
                self._clients[spec] = make_client(spec, self._settings)
                self.view[spec.name] = BackendHealth()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.gather(*(self._probe(s, c) for s, c in list(self._clients.items())))
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

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
        health = self.view.get(spec.name)
        if health is None:  # removed while the probe was in flight
            return
        state = "up" if error is None else "down"
        health.rtt_seconds = rtt
        health.last_error = error
        health.consecutive_failures = 0 if error is None else health.consecutive_failures + 1
        self._metrics.backend_up.labels(spec.name).set(1.0 if error is None else 0.0)
        if state != health.state:
            log.log(
                logging.INFO if error is None else logging.WARNING,
                "backend %s is %s",
                spec.name,
                state,
                extra={
                    "ctx": {"backend": spec.name, "address": spec.address, "state": state,
                            "previous": health.state, "error": error}
                },
            )
            health.state = state
            health.since = time.time()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
