"""The memcached front: the text and meta protocol on its own port, each key routed with the
worker's ring (the KV API's ring, epochs, hash tag and failover TTL cap).

- Single-key commands go to the key's backend as the client sent them (minus `noreply` and
  the meta `q` flag, whose replies the front drops itself), so every backend request earns
  exactly one reply.
- `get`/`gets`/`gat`/`gats` with keys on several backends fan out, one request per
  backend, and are merged in request order under one `END`.
- Writes that set a TTL carry the failover cap when the key's owner is down; the exptime
  is rewritten then, and only then.
- A backend that cannot answer turns a retrieval into a miss and anything else into
  `SERVER_ERROR backend <name> unavailable` (invariant 1: never a reroute).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from importlib.metadata import version

from proxy.metrics import ProxyMetrics
from proxy.native.front import (
    CommandCounters,
    Flusher,
    Front,
    FrontConnection,
    FrontLimits,
    FrontMetrics,
    FrontService,
    Slot,
)
from proxy.native.memcached_protocol import (
    RELATIVE_EXPTIME_LIMIT,
    Invalid,
    Kind,
    Parsed,
    ReplyFramer,
    Request,
    RequestParser,
    value_blocks,
)
from proxy.native.upstream import Upstream, Upstreams
from proxy.router import Router
from ringleader.backends import BackendError, ClientSettings

FRONT = "memcached"
COMMANDS = (
    "get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
    "delete", "incr", "decr", "touch", "mg", "ms", "md", "ma", "mn", "version", "verbosity",
    "quit",
)  # fmt: skip
REFUSAL = b"SERVER_ERROR too many connections\r\n"

_END = b"END\r\n"
_MISS = {Kind.RETRIEVAL: _END, Kind.META: b"EN\r\n"}
_ERRORS = (b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")
# Besides retrievals, the command that only reads: a failed backend makes it a miss.
_META_READ = b"mg"


class MemcachedFront(FrontService):
    """The memcached front of one worker."""

    def __init__(
        self,
        router: Router,
        metrics: ProxyMetrics,
        limits: FrontLimits,
        settings: ClientSettings,
        max_value_bytes: int,
        flusher: Flusher,
    ) -> None:
        front_metrics = FrontMetrics(metrics, FRONT, COMMANDS)
        self.front = Front(FRONT, limits, front_metrics, REFUSAL, flusher)
        self.upstreams = Upstreams(router, FRONT, settings, ReplyFramer, flusher, metrics)
        self.max_value_bytes = max_value_bytes
        self.version_reply = b"VERSION ringleader-%s\r\n" % version("ringleader").encode()
        self.counters = {name.encode(): front_metrics.command(name) for name in COMMANDS}
        self.other = front_metrics.command("other")

    async def serve(self, sock: socket.socket) -> None:
        await self.front.serve(sock, lambda: MemcachedConnection(self))


class MemcachedConnection(FrontConnection):
    def __init__(self, service: MemcachedFront) -> None:
        super().__init__(service.front)
        self._service = service
        self._upstreams = service.upstreams
        self._counters = service.counters
        limits = service.front.limits
        self._parser = RequestParser(
            limits.max_request_bytes, service.max_value_bytes, limits.max_keys
        )
        # Commands parsed but not yet dispatched: the pipeline limit held them back.
        self._backlog: deque[Parsed] = deque()
        self._done = False  # after quit, or an error the stream cannot recover from

    def received(self, data: bytes) -> None:
        if self._done:
            return
        items = self._parser.feed(data) if data else []
        backlog = self._backlog
        if backlog:
            backlog.extend(items)
            while backlog:
                if self.saturated():
                    self.hold()
                    return
                if not self._dispatch(backlog.popleft()):
                    backlog.clear()
                    return
            return
        for index, item in enumerate(items):
            if self.saturated():
                backlog.extend(items[index:])
                self.hold()
                return
            if not self._dispatch(item):
                return

    def _dispatch(self, item: Parsed) -> bool:
        """Starts one command; False when the connection takes no more."""
        if isinstance(item, Invalid):
            self._service.other.client_error.inc()
            if item.reply:
                self.answer(item.reply)
            if item.close:
                self._end()
                return False
            return True
        kind = item.kind
        if kind is Kind.RETRIEVAL:
            self._retrieve(item)
        elif kind is Kind.LOCAL:
            return self._local(item)
        else:
            self._forward(item)
        return True

    def _end(self) -> None:
        self._done = True
        self.close_after_replies()

    # -- commands the proxy answers ----------------------------------------------------------

    def _local(self, req: Request) -> bool:
        self._counters[req.command].ok.inc()
        command = req.command
        if command == b"mn":
            # After every reply still in flight: `answer` keeps the order.
            self.answer(b"MN\r\n")
        elif command == b"version":
            self.answer(self._service.version_reply)
        elif command == b"verbosity":
            if not req.noreply:
                self.answer(b"OK\r\n")
        else:  # quit
            self._end()
            return False
        return True

    # -- single-key commands -----------------------------------------------------------------

    def _forward(self, req: Request) -> None:
        key = req.keys[0]
        counters = self._counters[req.command]
        upstream = self._upstreams.route(key)
        if upstream is None:
            self._unroutable(req, counters)
            return
        payload = req.payload
        if req.exptime is not None:
            capped = self._capped(key, upstream, req.exptime)
            if capped is not None:
                payload = req.with_exptime(capped)
        upstream.send(payload, self.enqueue(_Single(self.read_at, self, req, counters)), req.kind)

    def _capped(self, key: bytes, upstream: Upstream, exptime: int) -> int | None:
        """The exptime to write instead of `exptime` under the failover cap, or None."""
        if exptime < 0:
            return None  # already expired
        ttl = exptime
        if exptime > RELATIVE_EXPTIME_LIMIT:
            ttl = exptime - int(time.time())
            if ttl <= 0:
                return None
        capped = self._upstreams.write_ttl(key, upstream, ttl)
        return None if capped == ttl else capped

    def _unroutable(self, req: Request, counters: CommandCounters) -> None:
        counters.backend_error.inc()
        if req.noreply:
            return
        if req.kind is Kind.RETRIEVAL or req.command == _META_READ:
            if not req.quiet:
                self.answer(_MISS[req.kind])
            return
        why = self._upstreams.mismatch or "the pool has no backends in its ring"
        self.answer(b"SERVER_ERROR " + why.encode() + b"\r\n")

    # -- retrievals --------------------------------------------------------------------------

    def _retrieve(self, req: Request) -> None:
        counters = self._counters[req.command]
        keys = req.keys
        route = self._upstreams.route
        if len(keys) == 1:
            upstream = route(keys[0])
            if upstream is None:
                self._unroutable(req, counters)
                return
            prefix = req.payload if req.exptime is None else self._prefix(req, keys, upstream)
            whole = self.enqueue(_Whole(self.read_at, self, counters))
            upstream.send(prefix + keys[0] + b"\r\n", whole, Kind.RETRIEVAL)
            return
        groups: dict[Upstream, list[bytes]] = {}
        for key in keys:
            upstream = route(key)
            if upstream is None:
                self._unroutable(req, counters)
                return
            group = groups.get(upstream)
            if group is None:
                groups[upstream] = [key]
            else:
                group.append(key)
        if len(groups) == 1:
            ((upstream, group),) = groups.items()
            payload = self._prefix(req, group, upstream) + b" ".join(group) + b"\r\n"
            upstream.send(payload, self.enqueue(_Whole(self.read_at, self, counters)),
                          Kind.RETRIEVAL)  # fmt: skip
            return
        merge = self.enqueue(_Merge(self.read_at, self, counters, keys, len(groups)))
        for upstream, group in groups.items():
            payload = self._prefix(req, group, upstream) + b" ".join(group) + b"\r\n"
            upstream.send(payload, merge, Kind.RETRIEVAL)

    def _prefix(self, req: Request, keys: list[bytes], upstream: Upstream) -> bytes:
        """`get `, or `gat <exptime> ` with the failover cap if any of `keys` needs it."""
        if req.exptime is None:
            return req.payload
        capped = [
            c for c in (self._capped(k, upstream, req.exptime) for k in keys) if c is not None
        ]
        if not capped:
            return req.payload
        return b"%s %d " % (req.command, min(capped))


# The slots below are also the backend reply callbacks: one object per command, as few
# allocations as the hot path can have (each one feeds the garbage collector).


class _Single(Slot):
    """A single-key command: the backend's reply is the client's, unless it asked for none."""

    __slots__ = ("_conn", "_counters", "_req")

    def __init__(
        self, started: float, conn: MemcachedConnection, req: Request, counters: CommandCounters
    ) -> None:
        super().__init__(started)
        self._conn = conn
        self._req = req
        self._counters = counters

    def __call__(self, reply: bytes | BackendError) -> None:
        req = self._req
        if isinstance(reply, BackendError):
            self._counters.backend_error.inc()
            self._conn.complete(self, _failure(req, reply.backend))
            return
        if reply.startswith(_ERRORS):
            self._counters.error.inc()
        else:
            self._counters.ok.inc()
        if req.noreply or (req.quiet and reply[:2] in req.quiet):
            reply = b""
        self._conn.complete(self, reply)


def _failure(req: Request, backend: str) -> bytes:
    """The reply to `req` when its backend could not answer (invariant 1: no reroute)."""
    if req.noreply:
        return b""
    if req.command == _META_READ:
        return b"" if req.quiet else _MISS[req.kind]
    return b"SERVER_ERROR backend %s unavailable\r\n" % backend.encode()


class _Whole(Slot):
    """A retrieval served by one backend: its reply is forwarded as it came."""

    __slots__ = ("_conn", "_counters")

    def __init__(
        self, started: float, conn: MemcachedConnection, counters: CommandCounters
    ) -> None:
        super().__init__(started)
        self._conn = conn
        self._counters = counters

    def __call__(self, reply: bytes | BackendError) -> None:
        if isinstance(reply, BackendError):
            self._counters.backend_error.inc()
            reply = _END
        elif reply.startswith(_ERRORS):
            self._counters.error.inc()
        else:
            self._counters.ok.inc()
        self._conn.complete(self, reply)


class _Merge(Slot):
    """A retrieval fanned out to several backends, merged in request order once every
    reply is in. A backend that failed or answered an error contributes misses."""

    __slots__ = ("_blocks", "_conn", "_counters", "_failed", "_keys", "_left")

    def __init__(
        self,
        started: float,
        conn: MemcachedConnection,
        counters: CommandCounters,
        keys: list[bytes],
        parts: int,
    ) -> None:
        super().__init__(started)
        self._conn = conn
        self._counters = counters
        self._keys = keys
        self._left = parts
        self._blocks: dict[bytes, bytes] = {}
        self._failed = False

    def __call__(self, reply: bytes | BackendError) -> None:
        if isinstance(reply, BackendError):
            self._failed = True
        else:
            self._blocks.update(value_blocks(reply))
        self._left -= 1
        if self._left:
            return
        if self._failed:
            self._counters.backend_error.inc()
        else:
            self._counters.ok.inc()
        blocks = self._blocks
        merged = [blocks[key] for key in self._keys if key in blocks]
        merged.append(_END)
        self._conn.complete(self, b"".join(merged))
