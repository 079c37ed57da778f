"""The HTTP cache's ASGI handler: every request outside the KV prefix (DESIGN.md, flow 2).

Request flow (README.md, "Request flow for the I/O layer"): check the request, look the
key up in the backend that owns it, let the policy decide, then serve, fetch (coalesced),
or revalidate. A HIT costs one backend GET, one decode_entry, one decide and one
response.

Results, sent as X-Cache and counted in ringleader_http_cache_results_total:
HIT (served from the cache, also when another request's fetch filled it), MISS (the
origin answered, whether stored or not), STALE (served stale: stale-while-revalidate,
stale-if-error), REVALIDATED (a 304 from the origin freshened the entry), PASS (not
looked up: unsafe methods, Cookie without --cache-cookies).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from proxy.asgi import ClientDisconnected, Receive, Scope, Send, respond, respond_error
from proxy.metrics import ProxyMetrics

from .cache_control import parse_cache_control
from .coalescing import Flights, await_fleet_fill, follow
from .conditional import is_not_modified, not_modified_headers
from .entry import Entry
from .forwarding import VIA, BadRequest, check_request, upstream_headers
from .headers import Headers, first, strip_hop_by_hop
from .invalidation import invalidated_keys
from .key import origin, uri_key
from .origin import OriginClient, OriginError, OriginReply
from .policy import CachePolicy
from .reuse import ERROR_STATUSES, OnError, Reuse, decide, on_origin_error, served_headers
from .storable import Storability, make_entry, sharing, storability
from .storage import EntryStore, retention
from .validation import freshen, revalidation_headers
from .vary import vary_matches

DEFAULT_MAX_BODY_BYTES = 1024 * 1024

HIT, MISS, STALE, REVALIDATED, PASS = b"HIT", b"MISS", b"STALE", b"REVALIDATED", b"PASS"
RESULTS = (HIT, MISS, STALE, REVALIDATED, PASS)

_VIA = (b"via", VIA)
_NO_BODY_STATUSES = frozenset({204, 304})

log = logging.getLogger("ringleader.httpcache")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """``max_body_bytes``: larger bodies stream through uncached. ``lease_ttl``: seconds
    a fleet lease lives if its holder never releases it. ``lease_wait``: the longest a
    request waits for another request's fetch before fetching itself."""

    policy: CachePolicy = field(default_factory=CachePolicy)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    purge_token: bytes | None = None
    lease_ttl: int = 3
    lease_wait: float = 2.0


@dataclass(slots=True)
class Outcome:
    """How a fetch ended, before anything is sent to the client: serve ``entry``, or
    pass on ``reply`` (``prefix`` already read; all of the body if ``complete``), or
    answer ``error_status``. ``shared`` is the entry now stored, for followers."""

    result: bytes
    entry: Entry | None = None
    reply: OriginReply | None = None
    prefix: bytes = b""
    complete: bool = False
    shared: Entry | None = None
    error_status: int = 0
    error: str = ""


class HTTPCacheHandler:
    def __init__(
        self,
        store: EntryStore,
        origin_client: OriginClient,
        settings: CacheSettings,
        metrics: ProxyMetrics,
    ) -> None:
        self._store = store
        self._origin = origin_client
        self._settings = settings
        self._policy = settings.policy
        self._metrics = metrics
        # The key's scheme and host are the origin's: the host actually used upstream.
        self._key_origin = origin(origin_client.scheme, origin_client.authority)
        self._results = {r: metrics.http_cache_results.labels(r.decode().lower()) for r in RESULTS}
        self._x_cache = {r: (b"x-cache", r) for r in RESULTS}
        self._coalesced = {
            (scope, outcome): metrics.http_cache_coalesced.labels(scope, outcome)
            for scope in ("worker", "fleet")
            for outcome in ("shared", "fetched")
        }
        self._flights = Flights()
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Serves one request and returns its status code."""
        headers: Headers = scope["headers"]
        try:
            content_length = check_request(headers, scope["raw_path"])
        except BadRequest as exc:
            await respond_error(send, exc.status, exc.error, exc.message)
            return exc.status
        method: str = scope["method"]
        query: bytes = scope["query_string"]
        target: bytes = scope["raw_path"] + b"?" + query if query else scope["raw_path"]
        if method == "PURGE":
            return await self._purge(headers, target, send)
        if (method != "GET" and method != "HEAD") or (
            not self._policy.cache_with_cookies and first(headers, b"cookie") is not None
        ):
            return await self._pass(scope, receive, send, target, content_length, PASS)
        key = uri_key(self._key_origin, target)
        entry = await self._store.get(key)
        verdict = decide(entry, headers, time.time(), self._policy)
        head = method == "HEAD"
        if entry is not None and verdict is Reuse.SERVE:
            return await self._serve(send, entry, headers, head, HIT)
        if entry is not None and verdict is Reuse.SERVE_STALE_REVALIDATE:
            self._refresh_later(key, entry, headers, _client(scope), target)
            return await self._serve(send, entry, headers, head, STALE)
        if verdict is Reuse.GATEWAY_TIMEOUT:
            self._results[MISS].inc()
            await respond_error(
                send, 504, "not_cached", "only-if-cached, and no usable entry is stored"
            )
            return 504
        if head:
            # HEAD is answered from GET entries but never fills them.
            return await self._pass(scope, receive, send, target, content_length, MISS)
        return await self._fill(scope, send, key, target, entry)

    # -- serving from the cache -------------------------------------------------------

    async def _serve(
        self, send: Send, entry: Entry, headers: Headers, head: bool, result: bytes
    ) -> int:
        out = served_headers(entry, time.time())
        status = entry.status
        # RFC 9110 §13.2.1: preconditions apply only where the answer would be 2xx.
        if 200 <= status < 300 and is_not_modified(headers, entry):
            status = 304
            out = not_modified_headers(out)
        out.append(self._x_cache[result])
        out.append(_VIA)
        self._results[result].inc()
        await respond(send, status, out, b"" if head or status == 304 else entry.body)
        return status

    # -- misses and revalidation, coalesced ---------------------------------------------

    async def _fill(
        self, scope: Scope, send: Send, key: bytes, target: bytes, entry: Entry | None
    ) -> int:
        headers: Headers = scope["headers"]
        client = _client(scope)
        flight = self._flights.lead(key)
        if flight is None:
            leader = self._flights.in_flight(key)
            assert leader is not None
            shared = await follow(leader, self._settings.lease_wait)
            if self._usable(shared, headers):
                assert shared is not None
                self._coalesced[("worker", "shared")].inc()
                return await self._serve(send, shared, headers, False, HIT)
            self._coalesced[("worker", "fetched")].inc()
            outcome = await self._obtain(headers, client, key, target, entry)
            return await self._answer(send, outcome, headers, False)
        lease = None
        shared = None
        try:
            lease = await self._store.acquire_lease(key, self._settings.lease_ttl)
            if lease is None:
                shared = await await_fleet_fill(self._store, key, self._settings.lease_wait, entry)
                if self._usable(shared, headers):
                    assert shared is not None
                    self._coalesced[("fleet", "shared")].inc()
                    self._flights.land(key, flight, shared)
                    return await self._serve(send, shared, headers, False, HIT)
                self._coalesced[("fleet", "fetched")].inc()
                shared = None
            outcome = await self._obtain(headers, client, key, target, entry)
            shared = outcome.shared
        finally:
            # Followers and other proxies get the entry before this client gets its bytes.
            self._flights.land(key, flight, shared)
            if lease is not None:
                await lease.release()
        return await self._answer(send, outcome, headers, False)

    def _usable(self, entry: Entry | None, headers: Headers) -> bool:
        """Whether another request's fresh fetch answers this one. The entry was received
        after this request arrived, so it is as good as our own origin answer (whatever
        its freshness lifetime, no-cache or max-age=0); only the variant and sharing
        rules (Vary, Authorization, Cookie) can rule it out."""
        return (
            entry is not None
            and vary_matches(entry.vary, headers)
            and sharing(headers, parse_cache_control(entry.headers), self._policy)
            is Storability.STORABLE
        )

    async def _obtain(
        self, headers: Headers, client: str | None, key: bytes, target: bytes, entry: Entry | None
    ) -> Outcome:
        """Fetch ``target`` (conditionally, when ``entry`` is given) and store what may be
        stored. Sends nothing to the client."""
        upstream = upstream_headers(headers, client, strip_conditions=True)
        if entry is not None:
            upstream = revalidation_headers(upstream, entry)
        try:
            reply = await self._origin.open("GET", target, upstream)
        except OriginError as exc:
            if entry is None:
                return _origin_failed(MISS, exc)
            if on_origin_error(entry, headers, time.time(), None, self._policy) is (
                OnError.SERVE_STALE
            ):
                return Outcome(STALE, entry=entry)
            # §5.2.2.2: revalidation impossible and stale not allowed.
            return Outcome(MISS, error_status=504, error=str(exc))
        if entry is not None:
            if reply.status == 304:
                await reply.close()
                fresh = freshen(entry, reply.headers, reply.request_time, reply.response_time)
                if fresh is None:
                    # The 304 describes another representation: fetch it whole.
                    return await self._obtain(headers, client, key, target, None)
                stored = await self._keep(key, headers, fresh)
                return Outcome(REVALIDATED, entry=fresh, shared=fresh if stored else None)
            if (
                reply.status in ERROR_STATUSES
                and on_origin_error(entry, headers, time.time(), reply.status, self._policy)
                is OnError.SERVE_STALE
            ):
                await reply.close()
                return Outcome(STALE, entry=entry)
        return await self._take(key, headers, reply)

    async def _take(self, key: bytes, headers: Headers, reply: OriginReply) -> Outcome:
        """A full origin reply: stored if storable and small enough, then passed on."""
        verdict = storability(b"GET", headers, reply.status, reply.headers, self._policy)
        if verdict is not Storability.STORABLE:
            return Outcome(MISS, reply=reply)
        try:
            body, complete = await reply.read_up_to(self._settings.max_body_bytes)
        except OriginError as exc:
            await reply.close()
            self._origin.log_failure("GET", key, exc)
            return _origin_failed(MISS, exc)
        if not complete:
            return Outcome(MISS, reply=reply, prefix=body)
        await reply.close()
        response_headers = reply.headers
        if first(response_headers, b"content-length") is None:
            response_headers = [*response_headers, (b"content-length", b"%d" % len(body))]
        entry = make_entry(
            headers, reply.status, response_headers, body, reply.request_time, reply.response_time
        )
        stored = await self._store.put(key, entry, retention(entry, time.time(), self._policy))
        return Outcome(
            MISS, reply=reply, prefix=body, complete=True, shared=entry if stored else None
        )

    async def _keep(self, key: bytes, headers: Headers, entry: Entry) -> bool:
        """Write a freshened entry back, unless the 304 made it unstorable."""
        verdict = storability(b"GET", headers, entry.status, entry.headers, self._policy)
        if verdict is not Storability.STORABLE:
            await self._store.delete(key)
            return False
        return await self._store.put(key, entry, retention(entry, time.time(), self._policy))

    async def _answer(
        self, send: Send, outcome: Outcome, request_headers: Headers, head: bool
    ) -> int:
        if outcome.entry is not None:
            return await self._serve(send, outcome.entry, request_headers, head, outcome.result)
        reply = outcome.reply
        self._results[outcome.result].inc()
        if reply is None:
            await respond_error(send, outcome.error_status, "origin_unavailable", outcome.error)
            return outcome.error_status
        try:
            headers = strip_hop_by_hop(reply.headers)
            if (
                outcome.complete
                and not head
                and reply.status >= 200
                and reply.status not in _NO_BODY_STATUSES
                and first(headers, b"content-length") is None
            ):
                headers.append((b"content-length", b"%d" % len(outcome.prefix)))
            headers.append(self._x_cache[outcome.result])
            headers.append(_VIA)
            if outcome.complete:
                await respond(send, reply.status, headers, outcome.prefix)
                return reply.status
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            if outcome.prefix:
                await send(
                    {"type": "http.response.body", "body": outcome.prefix, "more_body": True}
                )
            try:
                async for chunk in reply.rest():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OriginError as exc:
                # Headers are gone: all that is left is to cut the connection, so the
                # client sees a truncated response rather than a complete-looking one.
                self._origin.log_failure("GET", b"(streamed body)", exc)
                raise
            await send({"type": "http.response.body", "body": b""})
            return reply.status
        finally:
            await reply.close()

    # -- stale-while-revalidate -----------------------------------------------------------

    def _refresh_later(
        self, key: bytes, entry: Entry, headers: Headers, client: str | None, target: bytes
    ) -> None:
        flight = self._flights.lead(key)
        if flight is None:
            return  # this worker is already fetching the key
        task = asyncio.get_running_loop().create_task(
            self._refresh(key, flight, entry, headers, client, target)
        )
        # The loop keeps only weak references to tasks.
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(
        self,
        key: bytes,
        flight: asyncio.Future[Entry | None],
        entry: Entry,
        headers: Headers,
        client: str | None,
        target: bytes,
    ) -> None:
        shared = None
        lease = None
        try:
            lease = await self._store.acquire_lease(key, self._settings.lease_ttl)
            if lease is None:
                return  # another request in the fleet is refreshing it
            outcome = await self._obtain(headers, client, key, target, entry)
            shared = outcome.shared
            if outcome.reply is not None:
                await outcome.reply.close()
        except Exception:
            log.exception("background revalidation failed", extra={"ctx": {"key": key[:200]}})
        finally:
            self._flights.land(key, flight, shared)
            if lease is not None:
                await lease.release()

    # -- pass-through, invalidation and purge -------------------------------------------

    async def _pass(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: bytes,
        content_length: int,
        result: bytes,
    ) -> int:
        """Forward the request as it is; after a non-error answer to an unsafe method,
        drop the entries it invalidates (§4.4) before the client sees the answer."""
        headers: Headers = scope["headers"]
        method: str = scope["method"]
        upstream = upstream_headers(headers, _client(scope), strip_conditions=False)
        body = None
        if content_length > 0 or (
            content_length < 0 and first(headers, b"transfer-encoding") is not None
        ):
            body = _request_body(receive)
            if content_length >= 0:
                upstream.append((b"content-length", b"%d" % content_length))
        try:
            reply = await self._origin.open(method, target, upstream, body)
        except OriginError as exc:
            return await self._answer(send, _origin_failed(result, exc), headers, False)
        except ClientDisconnected:
            return 499
        for dropped in invalidated_keys(
            method.encode(),
            reply.status,
            self._origin.scheme,
            self._origin.authority,
            target,
            reply.headers,
        ):
            await self._store.delete(dropped)
        return await self._answer(send, Outcome(result, reply=reply), headers, method == "HEAD")

    async def _purge(self, headers: Headers, target: bytes, send: Send) -> int:
        """PURGE with ``Authorization: Bearer <token>`` drops the URI's slot, and with it
        every variant. Unlike the data path, a backend failure is reported (503): an
        operator must know the purge did not happen."""
        token = self._settings.purge_token
        if token is None:
            await respond_error(
                send, 405, "purge_disabled", "PURGE needs --purge-token-file on the proxy"
            )
            return 405
        given = first(headers, b"authorization") or b""
        if not hmac.compare_digest(given, b"Bearer " + token):
            await respond_error(send, 403, "forbidden", "PURGE needs the purge token")
            return 403
        existed = await self._store.delete(uri_key(self._key_origin, target))
        if existed is None:
            await respond_error(send, 503, "backend_unavailable", "the purge was not applied")
            return 503
        body = json.dumps({"purged": existed}).encode()
        await respond(send, 200, ((b"content-type", b"application/json"),), body)
        return 200

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self._origin.close()


def _origin_failed(result: bytes, exc: OriginError) -> Outcome:
    return Outcome(result, error_status=504 if exc.kind == "timeout" else 502, error=str(exc))


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return None if client is None else str(client[0])


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
