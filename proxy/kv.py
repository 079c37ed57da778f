"""The KV API: `GET|PUT|DELETE /v1/kv/{key}`, one ring lookup and one backend call each."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, unquote_to_bytes

from proxy.asgi import (
    JSON_HEADERS,
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    respond_error,
)
from proxy.keys import key_problem
from proxy.metrics import ProxyMetrics
from proxy.router import Route, Router
from ringleader.backends import BackendError
from ringleader.backends.errors import BackendRejected

KV_PREFIX = b"/v1/kv/"
# Ten years: anything longer is almost certainly a unit mistake (ms for s).
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
_METHODS = frozenset({"GET", "PUT", "DELETE"})
ALLOW = ((b"allow", b"GET, PUT, DELETE"),)
CLIENT_CLOSED = 499  # nginx's code for a client that went away; never sent.

_VALUE_TYPE = (b"content-type", b"application/octet-stream")
_NOT_FOUND = b'{"error": "not_found", "message": "no such key"}'


class KVHandler:
    def __init__(self, router: Router, metrics: ProxyMetrics, max_value_bytes: int) -> None:
        self._router = router
        self._metrics = metrics
        self._max_value_bytes = max_value_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Serves one request and returns its status code."""
        raw = scope["raw_path"][len(KV_PREFIX) :]
        key = unquote_to_bytes(raw) if b"%" in raw else raw
        problem = key_problem(key)
        if problem is not None:
            await respond_error(send, 400, "invalid_key", problem)
            return 400
        method = scope["method"]
        if method not in _METHODS:
            await respond_error(
                send, 405, "method_not_allowed", f"{method} is not supported on keys", ALLOW
            )
            return 405
        route = self._router.table.route(key)
        if route is None:
            return await self._no_backends(method, send)
        if method == "GET":
            return await self._get(route, key, send)
        if method == "PUT":
            return await self._put(route, key, scope, receive, send)
        return await self._delete(route, key, send)

    async def _no_backends(self, method: str, send: Send) -> int:
        epoch = (b"x-ringleader-epoch", b"%d" % self._router.table.state.epoch)
        if method == "GET":
            self._metrics.cache_lookups.labels("kv", "error").inc()
            miss = (b"x-ringleader-miss", b"no-backends")
            await respond(send, 404, (*JSON_HEADERS, miss, epoch), _NOT_FOUND)
            return 404
        await respond_error(
            send, 503, "no_backends", "the pool has no backends in its ring", (epoch,)
        )
        return 503

    async def _get(self, route: Route, key: bytes, send: Send) -> int:
        lookups = self._metrics.cache_lookups
        started = time.perf_counter()
        try:
            value = await route.client.get(key)
        except BackendError as exc:
            self._failed(route, "get", exc)
            lookups.labels("kv", "error").inc()
            # Invariant 1: an unreachable owner is a miss, never a reroute.
            miss = (b"x-ringleader-miss", f"backend-{exc.kind}".encode())
            await respond(send, 404, (*JSON_HEADERS, miss, *route.headers), _NOT_FOUND)
            return 404
        self._observe(route, "get", started)
        if value is None:
            lookups.labels("kv", "miss").inc()
            await respond(send, 404, (*JSON_HEADERS, *route.headers), _NOT_FOUND)
            return 404
        lookups.labels("kv", "hit").inc()
        headers = (_VALUE_TYPE, (b"content-length", b"%d" % len(value)), *route.headers)
        await respond(send, 200, headers, value)
        return 200

    async def _put(
        self, route: Route, key: bytes, scope: Scope, receive: Receive, send: Send
    ) -> int:
        ttl = parse_ttl(scope["query_string"])
        if isinstance(ttl, str):
            await respond_error(send, 400, "invalid_ttl", ttl)
            return 400
        try:
            value = await read_body(scope, receive, self._max_value_bytes)
        except BodyTooLarge as exc:
            await respond_error(send, 413, "value_too_large", str(exc))
            return 413
        except ClientDisconnected:
            return CLIENT_CLOSED
        ttl = self._router.table.write_ttl(key, route, ttl)
        started = time.perf_counter()
        try:
            await route.client.set(key, value, ttl)
        except BackendRejected as exc:
            await respond_error(send, 413, "value_too_large", exc.detail, route.headers)
            return 413
        except BackendError as exc:
            return await self._write_failed(route, "set", exc, send)
        self._observe(route, "set", started)
        await respond(send, 204, route.headers)
        return 204

    async def _delete(self, route: Route, key: bytes, send: Send) -> int:
        started = time.perf_counter()
        try:
            await route.client.delete(key)
        except BackendError as exc:
            return await self._write_failed(route, "delete", exc, send)
        self._observe(route, "delete", started)
        await respond(send, 204, route.headers)
        return 204

    async def _write_failed(self, route: Route, op: str, exc: BackendError, send: Send) -> int:
        self._failed(route, op, exc)
        await respond_error(
            send, 503, "backend_unavailable", f"{exc}; nothing was written", route.headers
        )
        return 503

    def _observe(self, route: Route, op: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.backend_duration.labels(route.spec.name, op).observe(elapsed)

    def _failed(self, route: Route, op: str, exc: BackendError) -> None:
        self._metrics.backend_errors.labels(route.spec.name, op, exc.kind).inc()


def parse_ttl(query: bytes) -> int | str:
    """The `ttl` query parameter in seconds (0 = no expiry), or why it is unusable."""
    if not query:
        return 0
    try:
        params = parse_qs(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return "query string is malformed"
    unknown = sorted(set(params) - {"ttl"})
    if unknown:
        return f"unknown query parameter {unknown[0]!r}; only ttl is accepted"
    values = params.get("ttl", ["0"])
    if len(values) != 1:
        return "ttl is given more than once"
    raw = values[0]
    if not raw.isascii() or not raw.isdigit():
        return f"ttl must be a whole number of seconds >= 0, got {raw[:40]!r}"
    ttl = int(raw)
    if ttl > MAX_TTL_SECONDS:
        return f"ttl {ttl} is above the {MAX_TTL_SECONDS}-second maximum"
    return ttl
