"""Pipelined backend connections for the native fronts, one per backend per worker.
Contract for the protocol modules:

- `Upstreams(router, protocol, settings, framer_factory, flusher, metrics, greeting)` per
  front per worker. `upstreams.route(key)` is the key's `Upstream` under the worker's
  current ring (`RoutingTable.route`: same ring, epoch and hash tag as the KV API), or None
  when the ring is empty or its backends speak another protocol (`upstreams.mismatch` then
  says why). `upstreams.write_ttl(key, upstream, ttl)` is the TTL a write must carry
  (the failover cap, docs/invariants.md invariant 3).
- `upstream.send(payload, done, expect)` queues `payload` (whole commands). `done(reply)`
  gets the reply the framer cut out, or a `BackendError` when the backend could not
  answer: down, in reconnect backoff, timed out (`--request-timeout`), or the connection
  died with the request in flight. Every waiting request of a connection fails at once, so
  a client never hangs. `done` may run before `send` returns. `done=None` discards the reply;
  `upstream.write(payload)` sends something that gets no reply at all (memcached noreply).
- Everything queued for one backend during an event-loop turn goes out in one write.
- Framing is the protocol's: `framer_factory()` returns a `ReplyFramer`; `gets(expect)`
  is given the `expect` of the oldest waiting request, so a framer can know from the
  request whether to cut one line, a VALUE...END block or a meta reply. It returns False
  until a whole reply is buffered and raises `ValueError` on bytes it cannot frame (the
  connection is then dropped).
- `greeting(spec)`: requests sent first on every new connection (AUTH, SELECT), built at
  each connect (an OSError, say an unreadable password file, fails the connect); a check
  returning an error text fails the connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from proxy.metrics import ProxyMetrics
from proxy.native.front import Flusher
from proxy.router import Route, Router, RoutingTable
from ringleader.backend_url import BackendSpec
from ringleader.backends import BackendError, ClientSettings
from ringleader.backends.errors import BackendProtocolError, BackendTimeout, BackendUnavailable
from ringleader.backends.unread import UNREAD_GRACE_SECONDS, unread

log = logging.getLogger("ringleader.native")

Done = Callable[[Any], None]


class ReplyFramer(Protocol):
    def feed(self, data: bytes) -> None: ...

    def gets(self, expect: Any) -> Any:
        """The next whole reply to a request sent with `expect`, or False."""
        ...


@dataclass(frozen=True, slots=True)
class Greeting:
    payload: bytes
    # None when `reply` is what was wanted, else why the connection cannot be used.
    check: Callable[[Any], str | None]
    expect: Any = None


# A waiting request: (done, expect, sent_at). A plain tuple: one is made per command.
_Waiting = tuple[Done | None, Any, float]


class _Link(asyncio.Protocol):
    """One socket of an `Upstream`; its events go to the upstream only while it is current."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.upstream.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed by server"
        self.upstream.link_failed(self, BackendUnavailable(self.upstream.name, reason))


class Upstream:
    """One pipelined connection to one backend: a FIFO of waiting requests, replies matched
    in order. It fails as a whole: on any fault every waiting request gets the error, and
    the next request reconnects once the backoff window has passed."""

    def __init__(
        self,
        route: Route,
        settings: ClientSettings,
        framer_factory: Callable[[], ReplyFramer],
        flusher: Flusher,
        greeting: Callable[[], Sequence[Greeting]],
        on_error: Callable[[BackendError, int], None],
    ) -> None:
        self.route = route
        self.name = route.spec.name
        self._spec = route.spec
        self._settings = settings
        self._framer_factory = framer_factory
        self._framer = framer_factory()
        self._flusher = flusher
        self._greeting = greeting
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._link: _Link | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._ready = False
        self._waiting: deque[_Waiting] = deque()
        self._out: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error: BackendError | None = None
        self._closed = False

    def send(self, payload: bytes, done: Done | None, expect: Any = None) -> None:
        if not self._ready and not self._start():
            if done is not None:
                refusal = self._refusal()
                self._on_error(refusal, 1)
                done(refusal)
            return
        self._waiting.append((done, expect, time.monotonic()))
        self._queue(payload)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._settings.request_timeout, self._check)

    def write(self, payload: bytes) -> None:
        """Sends `payload`, which the backend does not answer; dropped if it is down."""
        if self._ready or self._start():
            self._queue(payload)
        else:
            self._on_error(self._refusal(), 1)

    def _queue(self, payload: bytes) -> None:
        out = self._out
        if not out and self._ready:
            self._flusher.add(self)
        out.append(payload)

    def flush_out(self) -> None:
        out = self._out
        if not out or not self._ready or self._link is None:
            return
        assert self._link.transport is not None
        self._link.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # connecting

    def _start(self) -> bool:
        """True when requests may queue: connected, or a connection is on its way."""
        if self._closed:
            return False
        if self._connecting is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        self._connecting = asyncio.ensure_future(self._connect())
        return True

    def _refusal(self) -> BackendError:
        if self._closed:
            return BackendUnavailable(self.name, "left the ring")
        detail = self._last_error.detail if self._last_error else "not connected"
        return BackendUnavailable(self.name, f"in reconnect backoff after: {detail}")

    async def _connect(self) -> None:
        timeout = self._settings.connect_timeout
        link = _Link(self)
        try:
            greeting = self._greeting()
            async with asyncio.timeout(timeout):
                await self._loop.create_connection(lambda: link, self._spec.host, self._spec.port)
        except TimeoutError:
            error: BackendError = BackendTimeout(self.name, f"connect timed out ({timeout:g}s)")
        except OSError as exc:
            # Also a password file that cannot be read (the greeting).
            error = BackendUnavailable(self.name, f"connect failed: {exc.strerror or exc}")
        else:
            self._connecting = None
            if self._closed:
                assert link.transport is not None
                link.transport.abort()
                return
            self._link = link
            self._ready = True
            self._backoff = 0.0
            # The greeting goes first: its replies come back before any request's.
            queued, self._out = self._out, [g.payload for g in greeting]
            now = time.monotonic()
            greeted: list[_Waiting] = [(self._greeted(g), g.expect, now) for g in greeting]
            self._waiting.extendleft(reversed(greeted))
            self._out.extend(queued)
            if self._out:
                self._flusher.add(self)
            return
        self._connecting = None
        self._fail(error)

    def _greeted(self, greeting: Greeting) -> Done:
        def check(reply: Any) -> None:
            problem = "no reply" if isinstance(reply, BackendError) else greeting.check(reply)
            if problem is not None and self._link is not None:
                self.link_failed(self._link, BackendProtocolError(self.name, problem))

        return check

    # replies and failures

    def received(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return
        framer = self._framer
        waiting = self._waiting
        try:
            framer.feed(data)
            while waiting:
                reply = framer.gets(waiting[0][1])  # the oldest request's expect
                if reply is False:
                    break
                done = waiting.popleft()[0]  # its done
                if done is not None:
                    try:
                        done(reply)
                    except Exception:
                        # One client's bug must not fail the requests of every other.
                        log.exception("handling a reply from %s", self.name)
        except ValueError as exc:
            self.link_failed(link, BackendProtocolError(self.name, f"unparsable reply: {exc}"))

    def link_failed(self, link: _Link, error: BackendError) -> None:
        if link is not self._link:
            return
        self._link = None
        self._ready = False
        if link.transport is not None:
            link.transport.abort()
        self._fail(error)

    def _check(self) -> None:
        # Replies arrive in order, so only the oldest request can be the first overdue one.
        self._watchdog = None
        if not self._waiting:
            return
        overdue_at = self._waiting[0][2] + self._settings.request_timeout  # sent_at
        now = time.monotonic()
        if now < overdue_at:
            self._watchdog = self._loop.call_later(overdue_at - now, self._check)
        elif self._link is not None and unread(self._link.transport):
            self._watchdog = self._loop.call_later(UNREAD_GRACE_SECONDS, self._check)
        elif self._link is not None:
            timeout = self._settings.request_timeout
            self.link_failed(self._link, BackendTimeout(self.name, f"no reply within {timeout:g}s"))

    def _fail(self, error: BackendError) -> None:
        """Fails every waiting request with `error` and starts the backoff window."""
        settings = self._settings
        self._backoff = min(
            max(self._backoff * 2, settings.reconnect_backoff_min), settings.reconnect_backoff_max
        )
        self._retry_at = time.monotonic() + self._backoff
        self._last_error = error
        self._framer = self._framer_factory()
        self._out = []
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        failed = [done for done, _, _ in waiting if done is not None]
        if failed:
            self._on_error(error, len(failed))
            log.warning("backend %s failed", self.name, extra={"ctx": {
                "backend": self.name, "error": error.detail, "requests": len(failed)}})  # fmt: skip
        for done in failed:
            try:
                done(error)
            except Exception:
                log.exception("failing a request to %s", self.name)

    def close(self) -> None:
        """Fails whatever is still waiting; later requests fail at once."""
        self._closed = True
        error = BackendUnavailable(self.name, "left the ring")
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._link is not None:
            self.link_failed(self._link, error)
        else:
            self._fail(error)


class Upstreams:
    """The upstreams of one front in one worker, following the worker's ring."""

    def __init__(
        self,
        router: Router,
        protocol: str,
        settings: ClientSettings,
        framer_factory: Callable[[], ReplyFramer],
        flusher: Flusher,
        metrics: ProxyMetrics,
        greeting: Callable[[BackendSpec], Sequence[Greeting]] = lambda _spec: (),
    ) -> None:
        self._router = router
        self._protocol = protocol
        self._settings = settings
        self._framer_factory = framer_factory
        self._flusher = flusher
        self._errors = metrics.backend_errors
        self._greeting = greeting
        self._by_spec: dict[BackendSpec, Upstream] = {}
        self._by_name: dict[str, Upstream] = {}
        self._table: RoutingTable | None = None
        self.mismatch: str | None = None
        self._follow(router.table)

    @property
    def table(self) -> RoutingTable:
        return self._router.table

    def route(self, key: bytes) -> Upstream | None:
        table = self._router.table
        if table is not self._table:
            self._follow(table)
        ring = table.ring
        if ring is None or self.mismatch is not None:
            return None
        # Hot keys cost a bisect here: the ring remembers their hashes (HASH_MEMO).
        return self._by_name[ring.lookup(key).name]

    def refresh(self) -> None:
        """Follows a newly installed ring now rather than at the next command, so that a
        protocol mismatch is logged when the ring comes."""
        if self._router.table is not self._table:
            self._follow(self._router.table)

    def write_ttl(self, key: bytes, upstream: Upstream, ttl: int) -> int:
        """`ttl` (0: none), capped when `key` lands on `upstream` only because its owner is
        down (RoutingTable.write_ttl)."""
        return self._router.table.write_ttl(key, upstream.route, ttl)

    def is_failover(self, key: bytes, upstream: Upstream) -> bool:
        return self._router.table.is_failover(key, upstream.route)

    def _follow(self, table: RoutingTable) -> None:
        """Builds the name -> upstream map of a newly installed ring. A front whose
        protocol the pool does not speak serves errors until a matching ring comes."""
        self._table = table
        others = sorted({s.protocol.value for s in table.state.backends} - {self._protocol})
        if others:
            self.mismatch = f"the pool's backends speak {', '.join(others)}, not {self._protocol}"
            log.error("front refused: %s", self.mismatch, extra={"ctx": {
                "front": self._protocol, "epoch": table.state.epoch}})  # fmt: skip
        else:
            self.mismatch = None
        by_spec: dict[BackendSpec, Upstream] = {}
        for route in table.routes.values():
            upstream = self._by_spec.get(route.spec)
            if upstream is None:
                upstream = Upstream(
                    route, self._settings, self._framer_factory, self._flusher,
                    functools.partial(self._greeting, route.spec), self._count_error,
                )  # fmt: skip
            else:
                upstream.route = route
            by_spec[route.spec] = upstream
        retired = [u for spec, u in self._by_spec.items() if spec not in by_spec]
        self._by_spec = by_spec
        self._by_name = {u.name: u for u in by_spec.values()}
        if retired:
            # Requests already sent to a retired backend get their replies first.
            grace = self._settings.request_timeout + self._settings.connect_timeout
            asyncio.get_running_loop().call_later(grace, _close_all, retired)

    def _count_error(self, error: BackendError, operations: int) -> None:
        # Per operation, refusals in the backoff window included, as the KV API counts.
        self._errors.labels(error.backend, self._protocol, error.kind).inc(operations)

    def close(self) -> None:
        _close_all(list(self._by_spec.values()))


def _close_all(upstreams: list[Upstream]) -> None:
    for upstream in upstreams:
        upstream.close()
