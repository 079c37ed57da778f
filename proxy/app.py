"""The data-plane ASGI app: dispatches by path and accounts every request."""

from __future__ import annotations

import time

from proxy.asgi import HTTPDate, Message, Receive, Scope, Send, respond_error
from proxy.httpcache.handler import HTTPCacheHandler
from proxy.kv import KV_PREFIX, KVHandler
from proxy.metrics import ProxyMetrics
from proxy.telemetry import CounterChild


class DataPlane:
    def __init__(
        self, kv: KVHandler, metrics: ProxyMetrics, http: HTTPCacheHandler | None = None
    ) -> None:
        self._kv = kv
        self._http = http
        self._metrics = metrics
        self._durations = {
            route: metrics.request_duration.labels(route) for route in ("kv", "http", "other")
        }
        self._responses: dict[tuple[str, int], CounterChild] = {}
        self._date = HTTPDate()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        if scope["raw_path"].startswith(KV_PREFIX):
            route = "kv"
            status = await self._kv(scope, receive, self._dated(send))
        elif self._http is not None:
            # The cache's answers carry the origin's (or the stored) Date.
            route = "http"
            status = await self._http(scope, receive, send)
        else:
            route = "other"
            status = 404
            await respond_error(
                self._dated(send), 404, "not_found", "no such route; the KV API is /v1/kv/{key}"
            )
        self._durations[route].observe(time.perf_counter() - started)
        counter = self._responses.get((route, status))
        if counter is None:
            counter = self._responses[(route, status)] = self._metrics.responses.labels(
                route, str(status)
            )
        counter.inc()

    def _dated(self, send: Send) -> Send:
        """``send`` adding Date to the response head: here the proxy is the origin server,
        which must send one (RFC 9110 §6.6.1); the HTTP server adds none of its own."""

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = (*message["headers"], (b"date", self._date()))
            await send(message)

        return dated
