"""What every native front shares: limits, metrics, ordered replies, coalesced writes and
serving a shared listening socket. Contract for the protocol modules (redis.py, memcached*.py):

- One `Front` per protocol per worker: `Front(name, limits, metrics, refusal, flusher)`, then
  `await front.serve(sock, factory)` where `factory()` returns a new `FrontConnection`
  subclass instance bound to that front; at shutdown `await front.drain()` within a
  timeout, then `front.abort()`. A protocol's service object (`FrontService`) holds its
  `Front` and its `Upstreams` and is what the worker drives.
  Beyond `limits.max_connections` open connections a new one gets `refusal` and is closed.
- A `FrontConnection` subclass implements `received(data)`: parse whole commands, and for
  each one take a `Slot` with `reserve()` and later fill it with `complete(slot, reply)`,
  or answer at once with `answer(reply)`. Replies go out in the order the slots were
  reserved, whatever order they complete in. Before each command, `saturated()` says the
  connection has `max_pipeline` commands in flight: call `hold()` and return; reading
  pauses and `received(b"")` is called again once replies drain, so the subclass must keep
  unparsed bytes buffered. `close_after_replies()` closes once every reply is out (QUIT, or
  a stream that cannot be resynchronised).
- Metrics: `front.metrics.command(name)` gives the counters of one command (unknown names
  share "other"); `complete` observes the latency of the slot.
- Writes: everything a socket is given during one event-loop turn goes out in one write
  (`Flusher`, shared with the backend side in upstream.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from proxy.metrics import ProxyMetrics
from proxy.telemetry import CounterFamily

if TYPE_CHECKING:
    # upstream.py imports this module (Flusher); the type is only named here.
    from proxy.native.upstream import Upstreams

OTHER = "other"
# After its last reply, a connection being closed reads and drops what the client still
# sends for this long: closing with unread input would reset the connection, and the
# client could lose the reply that says why (nginx's lingering close).
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """What one client may cost a worker, per front."""

    # A command larger than this (its arguments, or a memcached line plus data block).
    max_request_bytes: int
    # Keys in one multi-key command (MGET, MSET, DEL, get k1 k2 ...).
    max_keys: int
    # Commands read but not yet answered, per connection; reading pauses at the limit.
    max_pipeline: int
    # Open connections per worker; the next one is refused.
    max_connections: int


class CommandCounters:
    """`ringleader_proxy_commands_total` of one front and command, by result."""

    __slots__ = ("backend_error", "client_error", "error", "ok")

    def __init__(self, family: CounterFamily, front: str, command: str) -> None:
        self.ok = family.labels(front, command, "ok")
        # The backend answered with an error (a redis -ERR, memcached SERVER_ERROR).
        self.error = family.labels(front, command, "error")
        # The backend could not answer: down, timed out, or not in the ring.
        self.backend_error = family.labels(front, command, "backend_error")
        # The proxy refused it: malformed, over a limit, or unsupported.
        self.client_error = family.labels(front, command, "client_error")


class FrontMetrics:
    """The metrics of one front in one worker; label values are bounded by `commands`."""

    def __init__(self, metrics: ProxyMetrics, front: str, commands: Iterable[str]) -> None:
        self.front = front
        self._by_name = {
            name: CommandCounters(metrics.front_commands, front, name)
            for name in (*commands, OTHER)
        }
        self._other = self._by_name[OTHER]
        self.latency = metrics.front_duration.labels(front)
        self.connections = metrics.front_connections.labels(front)
        self.refused = metrics.front_refused.labels(front)

    def command(self, name: str) -> CommandCounters:
        """`name` must be lower case; anything outside the front's set counts as other."""
        return self._by_name.get(name, self._other)


class Writer(Protocol):
    def flush_out(self) -> None: ...


class Flusher:
    """Coalesces writes: a socket given output during one event-loop turn is written once,
    at the end of the turn, however many commands or replies made up that output."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._dirty: list[Writer] = []

    def add(self, writer: Writer) -> None:
        """Call once when `writer`'s output goes from empty to non-empty."""
        if not self._dirty:
            self._loop.call_soon(self.flush)
        self._dirty.append(writer)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            writer.flush_out()


class Slot:
    """One command's place in its connection's reply order."""

    __slots__ = ("data", "started")

    def __init__(self, started: float) -> None:
        self.data: bytes | None = None
        self.started = started


SlotT = TypeVar("SlotT", bound=Slot)


class Front:
    """One native front in one worker: its socket, limits, metrics and open connections."""

    def __init__(
        self,
        name: str,
        limits: FrontLimits,
        metrics: FrontMetrics,
        refusal: bytes,
        flusher: Flusher,
    ) -> None:
        self.name = name
        self.limits = limits
        self.metrics = metrics
        self.refusal = refusal
        self.flusher = flusher
        self.connections: set[FrontConnection] = set()
        self._all_closed = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def serve(self, sock: socket.socket, factory: Callable[[], FrontConnection]) -> None:
        """Accepts on `sock`, shared with the other workers (each accepts its own clients)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, sock=sock)

    async def drain(self) -> None:
        """Stops accepting and closes each connection once the commands it has read are
        answered; returns when all are closed. Bound it with a timeout, then `abort()`."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_after_replies()
        if self.connections:
            self._all_closed.clear()
            await self._all_closed.wait()

    def abort(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    def closed(self, conn: FrontConnection) -> None:
        self.connections.discard(conn)
        self.metrics.connections.set(len(self.connections))
        if not self.connections:
            self._all_closed.set()


class FrontService:
    """One protocol's front in a worker, as the worker drives it: the listener and the
    backend connections; `drain()` within a timeout, then `close()`."""

    front: Front
    upstreams: Upstreams

    async def drain(self) -> None:
        """Answers what every connection has read, then closes it (bound with a timeout)."""
        await self.front.drain()

    def close(self) -> None:
        self.front.abort()
        self.upstreams.close()


class FrontConnection(asyncio.Protocol):
    """One client connection; subclasses parse their protocol in `received`."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self._flusher = front.flusher
        self._max_pipeline = front.limits.max_pipeline
        self._latency = front.metrics.latency
        self._transport: asyncio.Transport | None = None
        self._slots: deque[Slot] = deque()
        self._out: list[bytes] = []
        self._full = False  # max_pipeline commands in flight
        self._blocked = False  # the client is not reading its replies
        self._in_received = False
        self._closing = False
        self._finished = False
        self._closed = False
        self._refused = False
        self.read_at = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        front = self.front
        if len(front.connections) >= front.limits.max_connections:
            self._refused = True
            self._closing = True
            front.metrics.refused.inc()
            self._transport.write(front.refusal)
            self._finish()
            return
        with contextlib.suppress(OSError):
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        front.connections.add(self)
        front.metrics.connections.set(len(front.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._slots.clear()
        self._out.clear()
        if not self._refused:
            self.front.closed(self)

    def data_received(self, data: bytes) -> None:
        if self._closed or self._closing:
            return
        self._in_received = True
        # The time every command of this read was parsed at: one clock read per read.
        self.read_at = time.perf_counter()
        try:
            self.received(data)
        finally:
            self._in_received = False

    def pause_writing(self) -> None:
        self._blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._blocked = False
        self._update_reading()

    # for subclasses

    def received(self, data: bytes) -> None:
        """Parses and dispatches the commands `data` completes (b"": buffered ones)."""
        raise NotImplementedError

    def saturated(self) -> bool:
        return len(self._slots) >= self._max_pipeline

    def hold(self) -> None:
        """Stops reading until the commands in flight drop below the pipeline limit."""
        self._full = True
        self._update_reading()

    def reserve(self) -> Slot:
        """The next place in the reply order."""
        slot = Slot(self.read_at)
        self._slots.append(slot)
        return slot

    def enqueue(self, slot: SlotT) -> SlotT:
        """`reserve` for a `Slot` subclass the protocol module made (with more state)."""
        self._slots.append(slot)
        return slot

    def complete(self, slot: Slot, data: bytes) -> None:
        if self._closed:
            return
        slot.data = data
        self._latency.observe(time.perf_counter() - slot.started)
        slots = self._slots
        if slots[0] is not slot:
            return
        out = self._out
        if not out:
            self._flusher.add(self)
        while slots and slots[0].data is not None:
            out.append(slots.popleft().data)  # type: ignore[arg-type]
        if self._full and len(slots) < self._max_pipeline:
            self._full = False
            if not self._in_received:
                self.data_received(b"")
            self._update_reading()

    def answer(self, data: bytes) -> None:
        """Replies now, in order after every command still in flight."""
        if self._slots:
            slot = self.reserve()
            slot.data = data
            return
        if not self._out:
            self._flusher.add(self)
        self._out.append(data)

    def close_after_replies(self) -> None:
        """Reads no more commands; closes once every reply is out."""
        self._closing = True
        self._update_reading()
        if not self._slots and not self._out:
            self._finish()

    def _finish(self) -> None:
        transport = self._transport
        if transport is None or self._finished or self._closed:
            return
        self._finished = True
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # Writer

    def flush_out(self) -> None:
        out = self._out
        if not out or self._closed:
            return
        assert self._transport is not None
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        if self._closing and not self._slots:
            self._finish()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        # A closing connection reads on, to drop the input (LINGER_SECONDS).
        if (self._full or self._blocked) and not self._closing:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()
