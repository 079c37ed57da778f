"""A pipelined, multiplexed connection to a request/reply server, and a pool of them.

Both memcached and redis answer requests on one connection strictly in order, so a FIFO of
futures matches replies to requests and many requests share one socket. Writes issued in
the same event-loop turn are coalesced into one send.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from ringleader.backends.base import ClientSettings
from ringleader.backends.errors import (
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
)
from ringleader.backends.unread import UNREAD_GRACE_SECONDS, unread


class ReplyParser(Protocol):
    """hiredis.Reader's interface: `gets()` returns the next whole reply, or False."""

    def feed(self, data: bytes) -> None: ...

    def gets(self) -> Any: ...


class _Pending:
    __slots__ = ("future", "sent_at")

    def __init__(self, future: asyncio.Future[Any], sent_at: float) -> None:
        self.future = future
        self.sent_at = sent_at


class PipelinedConnection(asyncio.Protocol):
    """One socket with requests in flight. It dies as a whole: on any fault every pending
    request fails and the pool opens a new connection."""

    def __init__(self, backend: str, parser: ReplyParser, request_timeout: float) -> None:
        self._backend = backend
        self._parser = parser
        self._timeout = request_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Pending] = deque()
        self._outbox: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = asyncio.Event()
        self.error: BackendError | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        try:
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                if not self._pending:
                    raise BackendProtocolError(self._backend, "reply without a request")
                future = self._pending.popleft().future
                if not future.done():
                    future.set_result(reply)
                reply = parser.gets()
        except BackendError as exc:
            self.abort(exc)
        except Exception as exc:  # the parser's own protocol errors
            self.abort(BackendProtocolError(self._backend, f"unparsable reply: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed by server"
        self.abort(BackendUnavailable(self._backend, reason))

    # requests

    @property
    def usable(self) -> bool:
        return self.error is None and self._transport is not None

    def request(self, payload: bytes) -> asyncio.Future[Any]:
        """Queue `payload`; the future resolves to its reply."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.error is not None:
            future.set_exception(self.error)
            return future
        self._pending.append(_Pending(future, time.monotonic()))
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(payload)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_deadline)
        return future

    def _flush(self) -> None:
        if self._transport is not None and self.error is None:
            self._transport.write(b"".join(self._outbox))
        self._outbox.clear()

    def _check_deadline(self) -> None:
        # Replies arrive in order, so only the oldest request can be the first overdue one.
        self._watchdog = None
        if not self._pending or self.error is not None:
            return
        overdue_at = self._pending[0].sent_at + self._timeout
        now = time.monotonic()
        if now < overdue_at:
            self._watchdog = self._loop.call_later(overdue_at - now, self._check_deadline)
        elif unread(self._transport):
            self._watchdog = self._loop.call_later(UNREAD_GRACE_SECONDS, self._check_deadline)
        else:
            self.abort(BackendTimeout(self._backend, f"no reply within {self._timeout:g}s"))

    def abort(self, error: BackendError) -> None:
        if self.error is not None:
            return
        self.error = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.abort()
        self.closed.set()


Handshake = Callable[[PipelinedConnection], Awaitable[None]]


class ConnectionPool:
    """A few pipelined connections to one backend, opened lazily and round-robin.

    After a failure the pool refuses requests for a backoff window instead of letting each
    one wait for a timeout: a dead or stopped backend then costs microseconds per request,
    and never stalls traffic to other backends, which have pools of their own.
    """

    def __init__(
        self,
        backend: str,
        host: str,
        port: int,
        settings: ClientSettings,
        parser_factory: Callable[[], ReplyParser],
        handshake: Handshake | None = None,
    ) -> None:
        self._backend = backend
        self._host = host
        self._port = port
        self._settings = settings
        self._parser_factory = parser_factory
        self._handshake = handshake
        self._slots: list[PipelinedConnection | None] = [None] * settings.connections
        self._connecting: list[asyncio.Task[PipelinedConnection] | None] = [
            None
        ] * settings.connections
        self._next = itertools.cycle(range(settings.connections))
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error: BackendError | None = None

    async def request(self, payload: bytes) -> Any:
        slot = next(self._next)
        conn = self._slots[slot]
        if conn is None or not conn.usable:
            conn = await self._connection(slot)
        try:
            return await conn.request(payload)
        except BackendError as exc:
            # Every request pending on a dead connection gets the same error object; the
            # backoff must grow once per failure, not once per request.
            if exc is not self._last_error:
                self._note_failure(exc)
            raise

    async def _connection(self, slot: int) -> PipelinedConnection:
        if time.monotonic() < self._retry_at:
            assert self._last_error is not None
            raise BackendUnavailable(
                self._backend, f"in reconnect backoff after: {self._last_error.detail}"
            )
        task = self._connecting[slot]
        if task is None:
            task = asyncio.ensure_future(self._connect())
            self._connecting[slot] = task
            task.add_done_callback(lambda _t: self._connecting.__setitem__(slot, None))
        conn = await asyncio.shield(task)
        self._slots[slot] = conn
        return conn

    async def _connect(self) -> PipelinedConnection:
        loop = asyncio.get_running_loop()
        timeout = self._settings.connect_timeout
        conn: PipelinedConnection | None = None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: PipelinedConnection(
                        self._backend, self._parser_factory(), self._settings.request_timeout
                    ),
                    self._host,
                    self._port,
                )
                if self._handshake is not None:
                    await self._handshake(conn)
        except TimeoutError:
            error: BackendError = BackendTimeout(self._backend, f"connect timed out ({timeout:g}s)")
        except OSError as exc:
            error = BackendUnavailable(self._backend, f"connect failed: {exc.strerror or exc}")
        except BackendError as exc:
            error = exc
        else:
            self._backoff = 0.0
            return conn
        if conn is not None:
            # Connected, but the handshake failed or timed out: close the socket, or it
            # leaks once per reconnect attempt.
            conn.abort(error)
        self._note_failure(error)
        raise error

    def _note_failure(self, error: BackendError) -> None:
        settings = self._settings
        self._backoff = min(
            max(self._backoff * 2, settings.reconnect_backoff_min), settings.reconnect_backoff_max
        )
        self._retry_at = time.monotonic() + self._backoff
        self._last_error = error

    async def close(self) -> None:
        for task in self._connecting:
            if task is not None:
                task.cancel()
        for conn in self._slots:
            if conn is not None:
                conn.abort(BackendUnavailable(self._backend, "client closed"))
        self._slots = [None] * len(self._slots)
