"""The HTTP cache's ASGI handler: every request outside the KV prefix (README, "HTTP cache").

Request flow (README.md, "Request flow for the I/O layer"): check the request, look the
URI's slot up in the backend that owns it (and, for a response that varies, the
variant's slot), let the policy decide, then serve, fetch (coalesced), or revalidate. A
HIT on a response without Vary costs one backend GET, one decode_entry, one decide and
one response.

Results, sent as X-Cache and counted in ringleader_http_cache_results_total:
HIT (served from the cache, also when another request's fetch filled it), MISS (the
origin answered, whether stored or not), STALE (served stale: stale-while-revalidate,
stale-if-error), REVALIDATED (a 304 from the origin freshened the entry), PASS (not
looked up: unsafe methods, Cookie without --cache-cookies, hit-for-pass).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from proxy.asgi import ClientDisconnected, Receive, Scope, Send, respond, respond_error
from proxy.metrics import ProxyMetrics
from proxy.telemetry import CounterChild

from .coalescing import Flights, await_lease_release
from .conditional import is_not_modified, not_modified_headers
from .dates import format_http_date
from .entry import Entry
from .forwarding import VIA, BadRequest, check_request, not_forwarded, upstream_headers
from .headers import HeaderList, Headers, first, invalid_field, strip_hop_by_hop
from .invalidation import invalidated_keys
from .key import origin, uri_key
from .origin import OriginClient, OriginError, OriginReply
from .policy import CachePolicy
from .ranges import UNSATISFIABLE, byte_range, if_range_allows
from .reuse import ERROR_STATUSES, OnError, Reuse, decide, on_origin_error, served_headers
from .slot import PASS, VariantIndex
from .storable import Storability, make_entry, sharing, storability
from .storage import EntryStore, Slot, retention
from .validation import freshen, revalidation_headers
from .vary import forwarded_view, vary_matches

HIT, MISS, STALE, REVALIDATED, PASS_RESULT = b"HIT", b"MISS", b"STALE", b"REVALIDATED", b"PASS"
RESULTS = (HIT, MISS, STALE, REVALIDATED, PASS_RESULT)

_VIA = (b"via", VIA)
_NO_BODY_STATUSES = frozenset({204, 304})
# Why an answer was not stored, when the reason is the answer's own and so holds for every
# request of the URL: those leave a hit-for-pass marker. Reasons that belong to one
# request (Authorization, Cookie, its no-store) never do: one user's request must not
# change how the URL is served to others. Error statuses are transient, so they don't either.
_URL_WIDE = frozenset(
    {
        Storability.STATUS,
        Storability.NO_STORE,
        Storability.PRIVATE,
        Storability.SET_COOKIE,
        Storability.VARY_STAR,
        Storability.NO_FRESHNESS,
    }
)
TOO_LARGE = "too-large"

log = logging.getLogger("ringleader.httpcache")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """``max_body_bytes``: larger bodies stream through uncached. ``lease_ttl``: seconds
    a fleet lease lives if its holder never releases it. ``lease_wait``: the longest a
    request waits for another request's fetch before fetching itself. ``pass_ttl``:
    seconds an uncacheable answer sends its URL straight to the origin (hit-for-pass).
    ``max_variants``: variants kept per URI for responses with Vary.
    ``forward_headers``: request fields of forwarding.UNKEYED that reach the origin.
    Built from the proxy's settings table (`ProxyConfig.cache`), which holds the defaults."""

    policy: CachePolicy
    max_body_bytes: int
    purge_token: bytes | None
    lease_ttl: int
    lease_wait: float
    pass_ttl: int
    max_variants: int
    forward_headers: tuple[str, ...]


@dataclass(slots=True)
class Outcome:
    """How a fetch ended, before anything is sent to the client: serve ``entry``, or
    pass on ``reply`` (its body unread; store it if ``verdict`` is STORABLE), or answer
    ``error_status``."""

    result: bytes
    entry: Entry | None = None
    reply: OriginReply | None = None
    verdict: Storability | None = None
    error_status: int = 0
    error_code: str = "origin_unavailable"
    error: str = ""


@dataclass(slots=True)
class Lookup:
    """One request's view of its key: the slot's content and the entry that applies."""

    key: bytes
    head: Slot
    entry: Entry | None
    view: Headers
    """The request as forwarded (vary.forwarded_view): what variants are matched on."""


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
        self._never_forwarded = not_forwarded(settings.forward_headers)
        self._metrics = metrics
        # The key's scheme and host are the origin's: the host actually used upstream.
        self._key_origin = origin(origin_client.scheme, origin_client.authority)
        self._prefix = origin_client.prefix
        self._results = {r: metrics.http_cache_results.labels(r.decode().lower()) for r in RESULTS}
        self._x_cache = {r: (b"x-cache", r) for r in RESULTS}
        self._coalesced = {
            (scope, outcome): metrics.http_cache_coalesced.labels(scope, outcome)
            for scope in ("worker", "fleet")
            for outcome in ("shared", "fetched")
        }
        self._uncacheable: dict[str, CounterChild] = {}
        self._flights = Flights(metrics.http_cache_waiting.labels())
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
        # The origin's target (under the --origin prefix): what keys and invalidation use,
        # so proxies that front one origin under different prefixes share nothing wrongly.
        target = self._prefix + scope["raw_path"] + (b"?" + query if query else b"")
        if method == "PURGE":
            return await self._purge(headers, target, send)
        if (method != "GET" and method != "HEAD") or (
            not self._policy.cache_with_cookies and first(headers, b"cookie") is not None
        ):
            return await self._pass(scope, receive, send, target, content_length, PASS_RESULT)
        lookup = await self._lookup(uri_key(self._key_origin, target), headers)
        if lookup.head is PASS:
            return await self._pass(scope, receive, send, target, content_length, PASS_RESULT)
        entry = lookup.entry
        verdict = decide(entry, lookup.view, time.time(), self._policy)
        head = method == "HEAD"
        if entry is not None and verdict is Reuse.SERVE:
            return await self._serve(send, entry, headers, head, HIT)
        if entry is not None and verdict is Reuse.SERVE_STALE_REVALIDATE:
            self._refresh_later(lookup, _client(scope), target)
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
        if verdict is Reuse.MISS:
            # Another variant, or an entry this request may not share (Authorization): its
            # validators are not this request's to revalidate with, nor its slot to evict.
            lookup.entry = None
        return await self._fill(scope, receive, send, lookup, target)

    async def _lookup(self, key: bytes, headers: Headers) -> Lookup:
        head = await self._store.lookup(key)
        if isinstance(head, VariantIndex):
            view = forwarded_view(headers)
            return Lookup(key, head, await self._store.variant(key, head, view), view)
        # An entry in the URI's own slot varies on nothing, so the request needs no view
        # to match it; fills compute it anyway (forwarded_view in _obtain).
        return Lookup(key, head, head if isinstance(head, Entry) else None, headers)

    # -- serving from the cache -------------------------------------------------------

    async def _serve(
        self, send: Send, entry: Entry, headers: Headers, head: bool, result: bytes
    ) -> int:
        out = served_headers(entry, time.time())
        status = entry.status
        body = entry.body
        # RFC 9110 §13.2.1: preconditions apply only where the answer would be 2xx.
        if 200 <= status < 300 and is_not_modified(headers, entry):
            status = 304
            out = not_modified_headers(out)
            body = b""
        elif status == 200 and (requested := first(headers, b"range")) is not None:
            selected = byte_range(requested, len(body))
            if selected is not None and if_range_allows(headers, entry.headers):
                status, out, body = _partial(out, body, selected)
        out.append(self._x_cache[result])
        out.append(_VIA)
        self._results[result].inc()
        await respond(send, status, out, b"" if head else body)
        return status

    # -- misses and revalidation, coalesced ---------------------------------------------

    async def _fill(
        self, scope: Scope, receive: Receive, send: Send, lookup: Lookup, target: bytes
    ) -> int:
        headers: Headers = scope["headers"]
        key = lookup.key
        flight = self._flights.lead(key)
        if flight is None:
            shared = await self._flights.follow(key, self._settings.lease_wait)
            if shared is not None and self._usable(shared, headers):
                self._coalesced[("worker", "shared")].inc()
                return await self._serve(send, shared, headers, False, HIT)
            self._coalesced[("worker", "fetched")].inc()
            return await self._fetch_and_answer(scope, receive, send, lookup, target, None)
        lease = None
        try:
            lease = await self._store.acquire_lease(key, self._settings.lease_ttl)
            if lease is None:
                shared = await self._fleet_fill(lookup, headers)
                if shared is not None:
                    self._coalesced[("fleet", "shared")].inc()
                    self._flights.land(key, flight, shared)
                    return await self._serve(send, shared, headers, False, HIT)
                self._coalesced[("fleet", "fetched")].inc()
            return await self._fetch_and_answer(scope, receive, send, lookup, target, flight)
        finally:
            # Idempotent: an answer that stored an entry has landed the flight with it.
            self._flights.land(key, flight, None)
            if lease is not None:
                await lease.release()

    async def _fleet_fill(self, lookup: Lookup, headers: Headers) -> Entry | None:
        """The entry another proxy's lease holder stored for this request, if any."""
        if not await await_lease_release(self._store, lookup.key, self._settings.lease_wait):
            return None
        entry = (await self._lookup(lookup.key, headers)).entry
        stale = lookup.entry
        if entry is None or (stale is not None and entry.response_time <= stale.response_time):
            return None
        return entry if self._usable(entry, headers) else None

    def _usable(self, entry: Entry, headers: Headers) -> bool:
        """Whether another request's fresh fetch answers this one. The entry was received
        after this request arrived, so it is as good as our own origin answer (whatever
        its freshness lifetime, no-cache or max-age=0); only the variant and sharing
        rules (Vary, Authorization, Cookie) can rule it out."""
        return (
            vary_matches(entry.vary, forwarded_view(headers) if entry.vary else headers)
            and sharing(headers, entry.cache_control, self._policy) is Storability.STORABLE
        )

    async def _fetch_and_answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        lookup: Lookup,
        target: bytes,
        flight: asyncio.Future[Entry | None] | None,
    ) -> int:
        """Fetch, then answer this client while storing what may be stored. A client that
        goes away cancels the fetch, unless requests in this worker wait on its flight."""
        work = asyncio.ensure_future(self._fetch_and_send(scope, send, lookup, target, flight))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and (flight is None or not self._flights.followed(lookup.key)):
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                return CLIENT_CLOSED
            return await work
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()

    async def _fetch_and_send(
        self,
        scope: Scope,
        send: Send,
        lookup: Lookup,
        target: bytes,
        flight: asyncio.Future[Entry | None] | None,
    ) -> int:
        headers: Headers = scope["headers"]
        view = forwarded_view(headers)
        outcome = await self._obtain(view, _client(scope), lookup, target)
        if outcome.entry is not None:
            if flight is not None and outcome.verdict is Storability.STORABLE:
                self._flights.land(lookup.key, flight, outcome.entry)
            return await self._serve(send, outcome.entry, headers, False, outcome.result)
        reply = outcome.reply
        if reply is None:
            return await self._fail(send, outcome)
        if outcome.verdict is not Storability.STORABLE:
            if flight is not None:
                # Followers need not wait for a body they could not share.
                self._flights.land(lookup.key, flight, None)
            return await self._relay(send, reply, outcome.result, False)
        if first(headers, b"range") is None:
            return await self._relay_and_store(send, lookup, view, reply, flight)
        # The whole object is fetched; the range is answered from it (within the limit).
        try:
            entry = await self._store_whole(lookup, view, reply)
        except OriginError as exc:
            return await self._fail(send, _origin_failed(MISS, exc))
        if entry is None:
            return await self._relay(send, reply, MISS, False)
        if flight is not None:
            self._flights.land(lookup.key, flight, entry)
        return await self._serve(send, entry, headers, False, MISS)

    async def _fail(self, send: Send, outcome: Outcome) -> int:
        self._results[outcome.result].inc()
        await respond_error(send, outcome.error_status, outcome.error_code, outcome.error)
        return outcome.error_status

    async def _obtain(
        self, view: HeaderList, client: str | None, lookup: Lookup, target: bytes
    ) -> Outcome:
        """Fetch ``target`` (conditionally, when the lookup found an entry) and store a
        freshened entry. Sends nothing to the client; a full reply's body is left unread."""
        entry = lookup.entry
        upstream = upstream_headers(view, client, True, self._never_forwarded)
        if entry is not None:
            upstream = revalidation_headers(upstream, entry)
        try:
            reply = await self._origin.open("GET", target, upstream)
        except OriginError as exc:
            if entry is None:
                return _origin_failed(MISS, exc)
            if on_origin_error(entry, view, time.time(), None, self._policy) is (
                OnError.SERVE_STALE
            ):
                return Outcome(STALE, entry=entry)
            # §5.2.2.2: revalidation impossible and stale not allowed.
            return Outcome(MISS, error_status=504, error=str(exc))
        bad = invalid_field(reply.headers)
        if bad is not None:
            await reply.close()
            return _invalid_reply(MISS, bad)
        if entry is not None:
            if reply.status == 304:
                await reply.close()
                fresh = freshen(entry, reply.headers, reply.request_time, reply.response_time)
                if fresh is None:
                    # The 304 describes another representation: fetch it whole.
                    lookup.entry = None
                    return await self._obtain(view, client, lookup, target)
                stored = await self._keep(lookup, view, fresh)
                return Outcome(REVALIDATED, entry=fresh, verdict=stored)
            if (
                reply.status in ERROR_STATUSES
                and on_origin_error(entry, view, time.time(), reply.status, self._policy)
                is OnError.SERVE_STALE
            ):
                await reply.close()
                return Outcome(STALE, entry=entry)
        verdict = storability(b"GET", view, reply.status, reply.headers, self._policy)
        if verdict in _URL_WIDE and reply.status not in ERROR_STATUSES:
            await self._mark_pass(lookup.key, verdict.value)
        return Outcome(MISS, reply=reply, verdict=verdict)

    async def _mark_pass(self, key: bytes, reason: str) -> None:
        counter = self._uncacheable.get(reason)
        if counter is None:
            counter = self._uncacheable[reason] = self._metrics.http_cache_passes.labels(reason)
        counter.inc()
        await self._store.mark_pass(key, self._settings.pass_ttl)

    async def _keep(self, lookup: Lookup, view: Headers, entry: Entry) -> Storability:
        """Write a freshened entry back, unless the 304 made it unstorable."""
        verdict = storability(b"GET", view, entry.status, entry.headers, self._policy)
        if verdict is Storability.STORABLE:
            ttl = retention(entry, time.time(), self._policy)
            if not await self._store.put(lookup.key, entry, ttl, lookup.head):
                return Storability.NO_STORE
        elif verdict in _URL_WIDE:
            await self._mark_pass(lookup.key, verdict.value)
        return verdict

    async def _put_reply(
        self, lookup: Lookup, view: Headers, reply: OriginReply, body: bytes
    ) -> Entry | None:
        """Store a complete reply; the entry, or None if the backend did not take it."""
        headers = reply.headers
        if first(headers, b"content-length") is None or first(headers, b"transfer-encoding"):
            headers = [
                *(f for f in headers if f[0] != b"content-length"),
                (b"content-length", b"%d" % len(body)),
            ]
        entry = make_entry(
            view, reply.status, headers, body, reply.request_time, reply.response_time
        )
        ttl = retention(entry, time.time(), self._policy)
        return entry if await self._store.put(lookup.key, entry, ttl, lookup.head) else None

    async def _store_whole(self, lookup: Lookup, view: Headers, reply: OriginReply) -> Entry | None:
        """Read the whole body and store it. None, with the reply still open and nothing
        of it lost, when it is larger than the limit; OriginError (the reply closed) when
        the origin failed."""
        try:
            body, complete = await reply.read_up_to(self._settings.max_body_bytes)
        except OriginError as exc:
            await reply.close()
            self._origin.log_failure("GET", lookup.key, exc)
            raise
        if not complete:
            reply.unread(body)
            await self._mark_pass(lookup.key, TOO_LARGE)
            return None
        await reply.close()
        entry = await self._put_reply(lookup, view, reply, body)
        if entry is None:
            # Not stored (backend down or full), but complete: serve it all the same.
            return make_entry(
                view, reply.status, reply.headers, body, reply.request_time, reply.response_time
            )
        return entry

    async def _relay_and_store(
        self,
        send: Send,
        lookup: Lookup,
        view: Headers,
        reply: OriginReply,
        flight: asyncio.Future[Entry | None] | None,
    ) -> int:
        """Stream a storable reply to the client as it arrives, keeping a copy while it
        stays within the size limit, and store the copy once the body is complete."""
        copy = BodyCopy(self._settings.max_body_bytes)

        async def store() -> None:
            body = copy.body()
            if body is None:
                await self._mark_pass(lookup.key, TOO_LARGE)
                return
            entry = await self._put_reply(lookup, view, reply, body)
            if flight is not None and entry is not None:
                self._flights.land(lookup.key, flight, entry)

        return await self._relay(send, reply, MISS, False, copy, store)

    async def _relay(
        self,
        send: Send,
        reply: OriginReply,
        result: bytes,
        head: bool,
        copy: BodyCopy | None = None,
        before_end: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Pass an origin reply on as it arrives: its headers at once, then each chunk,
        each added to ``copy``. ``before_end`` runs once the whole body has arrived and
        before the client can see the response complete: the last byte of a body with a
        Content-Length is held back until then, so a client's next request finds what
        ``before_end`` stored."""
        self._results[result].inc()
        try:
            headers = self._relayed_headers(reply, result)
            bodyless = head or reply.status < 200 or reply.status in _NO_BODY_STATUSES
            hold = before_end is not None and first(headers, b"content-length") is not None
            held = b""
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            try:
                async for chunk in reply.rest():
                    if copy is not None:
                        copy.add(chunk)
                    if bodyless:
                        continue
                    if hold:
                        chunk, held = held + chunk[:-1], chunk[-1:]
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OriginError as exc:
                # Headers are gone: all that is left is to cut the connection, so the
                # client sees a truncated response rather than a complete-looking one.
                self._origin.log_failure("GET", b"(streamed body)", exc)
                raise
            if before_end is not None:
                await before_end()
            await send({"type": "http.response.body", "body": held})
            return reply.status
        finally:
            await reply.close()

    def _relayed_headers(self, reply: OriginReply, result: bytes) -> HeaderList:
        """The origin's headers as relayed: no hop-by-hop fields (RFC 9110 §7.6.1), no
        Content-Length beside a Transfer-Encoding (RFC 9112 §6.3: it is wrong), and a
        Date if the origin sent none (RFC 9110 §6.6.1)."""
        headers = strip_hop_by_hop(reply.headers)
        if first(reply.headers, b"transfer-encoding") is not None:
            headers = [f for f in headers if f[0] != b"content-length"]
        if first(headers, b"date") is None:
            headers.append((b"date", format_http_date(reply.response_time)))
        headers.append(self._x_cache[result])
        headers.append(_VIA)
        return headers

    # -- stale-while-revalidate -----------------------------------------------------------

    def _refresh_later(self, lookup: Lookup, client: str | None, target: bytes) -> None:
        flight = self._flights.lead(lookup.key)
        if flight is None:
            return  # this worker is already fetching the key
        task = asyncio.get_running_loop().create_task(self._refresh(lookup, flight, client, target))
        # The loop keeps only weak references to tasks.
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(
        self,
        lookup: Lookup,
        flight: asyncio.Future[Entry | None],
        client: str | None,
        target: bytes,
    ) -> None:
        shared = None
        lease = None
        try:
            lease = await self._store.acquire_lease(lookup.key, self._settings.lease_ttl)
            if lease is None:
                return  # another request in the fleet is refreshing it
            view = forwarded_view(lookup.view)
            outcome = await self._obtain(view, client, lookup, target)
            shared = outcome.entry if outcome.result == REVALIDATED else None
            if outcome.reply is not None:
                if outcome.verdict is Storability.STORABLE:
                    shared = await self._store_whole(lookup, view, outcome.reply)
                await outcome.reply.close()
        except OriginError:
            pass  # logged by the origin client; the entry stays as it was
        except Exception:
            ctx = {"ctx": {"key": lookup.key[:200]}}
            log.exception("background revalidation failed", extra=ctx)
        finally:
            self._flights.land(lookup.key, flight, shared)
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
        """Forward the request as it is, conditionals and Range included; after a
        non-error answer to an unsafe method, drop the entries it invalidates (§4.4)
        before the client sees the answer."""
        headers: Headers = scope["headers"]
        method: str = scope["method"]
        upstream = upstream_headers(headers, _client(scope), False, self._never_forwarded)
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
            return await self._fail(send, _origin_failed(result, exc))
        except ClientDisconnected:
            return CLIENT_CLOSED
        bad = invalid_field(reply.headers)
        if bad is not None:
            await reply.close()
            return await self._fail(send, _invalid_reply(result, bad))
        for dropped in invalidated_keys(
            method.encode(),
            reply.status,
            self._origin.scheme,
            self._origin.authority,
            target,
            reply.headers,
        ):
            await self._store.delete(dropped)
        return await self._relay(send, reply, result, method == "HEAD")

    async def _purge(self, headers: Headers, target: bytes, send: Send) -> int:
        """PURGE with ``Authorization: Bearer <token>`` drops the URI's slot and every
        variant. Unlike the data path, a backend failure is reported (503): an operator
        must know the purge did not happen."""
        token = self._settings.purge_token
        if token is None:
            await respond_error(
                send, 405, "purge_disabled", "PURGE needs --purge-token-file on the proxy"
            )
            return 405
        scheme, _, given = (first(headers, b"authorization") or b"").strip().partition(b" ")
        # RFC 9110 §11.1: the scheme name is case-insensitive; the token is compared in
        # constant time.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), token):
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


class BodyCopy:
    """A relayed body, kept while it stays within ``limit`` bytes."""

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] | None = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        if self._parts is None:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._parts = None  # too large to store: stop copying, keep streaming
            return
        self._parts.append(chunk)

    def body(self) -> bytes | None:
        """The whole body, or None if it outgrew the limit."""
        return None if self._parts is None else b"".join(self._parts)


CLIENT_CLOSED = 499  # nginx's code for a client that went away; never sent.


def _partial(
    headers: HeaderList, body: bytes, selected: tuple[int, int]
) -> tuple[int, HeaderList, bytes]:
    """A 206 (or 416) for one byte range of a stored 200 (RFC 9110 §14.4, §15.5.17)."""
    out = [f for f in headers if f[0] != b"content-length"]
    if selected == UNSATISFIABLE:
        out.append((b"content-range", b"bytes */%d" % len(body)))
        out.append((b"content-length", b"0"))
        return 416, out, b""
    start, end = selected
    out.append((b"content-range", b"bytes %d-%d/%d" % (start, end, len(body))))
    out.append((b"content-length", b"%d" % (end - start + 1)))
    return 206, out, body[start : end + 1]


def _origin_failed(result: bytes, exc: OriginError) -> Outcome:
    return Outcome(result, error_status=504 if exc.kind == "timeout" else 502, error=str(exc))


def _invalid_reply(result: bytes, name: bytes) -> Outcome:
    message = f"the origin sent an invalid header field {name[:64].decode('latin-1')!r}"
    return Outcome(result, error_status=502, error_code="bad_origin_reply", error=message)


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return None if client is None else str(client[0])


async def _disconnected(receive: Receive) -> None:
    """Returns once the client is gone (or its request is over): the rest of a bodiless
    request's messages carry nothing else."""
    while (await receive())["type"] != "http.disconnect":
        pass


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
