"""Reports the proxy's view of its backends to the control plane's failure detector.

A report goes out whenever a verdict changes and at least every `interval` otherwise, so
the detector can tell a proxy with nothing to say from one that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from urllib.parse import quote

import httpx

from proxy.config import ProxyConfig
from proxy.health import BackendHealth
from ringleader.control_client import ControlClient, ControlError
from ringleader.wire import HealthReport

log = logging.getLogger("ringleader.reporter")


def proxy_identity(config: ProxyConfig) -> str:
    """Stable across restarts of the same proxy, distinct between proxies."""
    return f"{socket.gethostname()}/{config.listen}"


class HealthReporter:
    def __init__(
        self,
        config: ProxyConfig,
        view: dict[str, BackendHealth],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = ControlClient(
            list(config.control), config.token, timeout=2.0, deadline=2.0, transport=transport
        )
        self._path = f"/v1/pools/{quote(config.pool, safe='')}/reports"
        self._identity = proxy_identity(config)
        self._view = view
        self._interval = config.report_interval
        self._wake = asyncio.Event()
        self._failing = False

    def changed(self) -> None:
        self._wake.set()

    def report(self) -> HealthReport:
        return HealthReport(
            proxy=self._identity,
            backends={name: h.observation() for name, h in self._view.items()},
            interval=self._interval,
        )

    async def run(self) -> None:
        headers = {"x-ringleader-who": f"proxy:{self._identity}"}
        while True:
            self._wake.clear()
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
        await self._client.close()
