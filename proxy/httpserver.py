"""The data port's own HTTP/1.1 server: llhttp (through httptools) on an `asyncio.Protocol`,
serving a raw-ASGI callable (`app(scope, receive, send)`, HTTP only, no lifespan), so
`proxy.app.DataPlane` runs on it unchanged.

Why not uvicorn: it cannot bound request-head bytes or head read time (slowloris), it drops
the connection on a status outside `http.HTTPStatus` (999), it sends an app's
Content-Length and chunked together, and it spends more CPU per request than this server.
See BENCHMARKS.md, "Data-port HTTP server: the comparison".

Design
------
One `_Connection` per TCP connection, one parser each. A connection answers one request at
a time, in order; the next one starts once the previous response is complete (its app call
may still be finishing). The parser is fed so that message boundaries are known:

* In the head phase it is fed at most what the head may still use. Small reads (<= 4 KiB,
  the common case) are fed whole; larger ones are cut just after the first CRLFCRLF.
* In the body phase, a Content-Length body is fed exactly; a chunked body in 4 KiB pieces.
* Bytes that arrive while a request is being answered (pipelining) are held unparsed and
  reading pauses; they are fed once the response is complete. Messages that begin inside a
  piece already fed (pipelined in one small read, or after a chunked body) are queued and
  answered in order.

So a connection holds at most one read (256 KB with uvloop) of unparsed bytes, the requests
parsed from one <= 4 KiB piece, and up to 64 KiB of request body the app has not read yet
(reading pauses above it).

Requests
--------
`scope` carries type, asgi, http_version ("1.1"/"1.0"; others get 505), server, client,
scheme "http", method, root_path "", path (percent-decoded), raw_path (no query),
query_string, headers (names lowercased, in order) and extensions. llhttp refuses malformed
requests and most smuggling shapes (400); the server also refuses Transfer-Encoding with
Content-Length or on HTTP/1.0 (400) and any transfer coding but a lone `chunked` (501).
`Expect: 100-continue` is answered when the app first calls receive(). A response written
before its request was read in full closes the connection after it.

Framing of responses
--------------------
Exactly one of Content-Length and `Transfer-Encoding: chunked`, decided when the first body
message arrives: the app's Content-Length if it gave one (a body that disagrees closes the
connection instead of being sent), else Content-Length if the whole body comes in one
message, else chunked. HTTP/1.0 clients get a close-delimited body instead of chunked (the
only exception). HEAD, 1xx, 204 and 304 responses carry no body; HEAD and 304 keep the app's
Content-Length. `transfer-encoding`, `connection` and `keep-alive` from the app are dropped;
`connection: close` (or `keep-alive` for HTTP/1.0) is added when the server decides it. Any
status 100-999 is relayed, with `http.HTTPStatus`'s phrase or an empty one. Header names are
written as the app gives them; a name that is not a token, or CR/LF anywhere in the head,
is an app error. No Date or Server header is added: the app owns them.

An app exception (or a return without a complete response) before any response byte is
written gives a 500, even after `http.response.start` (the head is written with the first
body message); once bytes are out, the connection is closed so the client sees a truncated
message.

Limits (constructor parameters of `Server`)
-------------------------------------------
* max_header_bytes (32 KiB): request line + header section (and, for a chunked body, its
  framing and trailers). Crossing it answers 431 at once. A head that begins inside a piece
  after another message is counted there from its parsed parts, so it may pass the limit
  by at most that piece (4 KiB) before the 431.
* header_timeout (10 s): from a request's first byte to the end of its head; then 408.
* keepalive_timeout (5 s): a connection with no request in progress is closed silently.
* body_timeout (30 s): between request body reads while the server is reading; then close.
* send_timeout (30 s): a response write paused by a reader that does not read; then abort.
* max_connections (1024 per worker): a connection beyond it is answered 503 and closed
  without reading its request (chosen over a bare close so that a client or balancer can
  tell overload from a crash; one whose request is already in flight may see a reset).
* write_high_water (64 KiB): `send()` waits for the transport buffer to drain below a
  quarter of it, so a slow reader holds back the app instead of filling memory.
* drain_timeout (10 s): graceful shutdown's bound for in-flight requests.

Timeouts are checked by one sweep per server every min(timeouts)/4 seconds (at most 1 s),
so one fires up to a sweep period late. After 400/408/431/501/505 the server half-closes and
discards what the client still sends for up to 2 s, so the client reads the answer
rather than a reset.

Disconnects
-----------
When the peer closes (EOF counts: half-closed clients are treated as gone, like uvicorn),
`receive()` returns `http.disconnect` and `send()` becomes a no-op. An app that waits on
something else can learn it from `scope["extensions"]["ringleader.disconnected"]()`, an
awaitable that completes when the client is gone, or the server can cancel the app call
itself (`cancel_on_disconnect=True`; off by default, since cancelling a backend call midway
can leave a pooled connection in an unknown state). While reading is paused (bytes held or
an unread body above 64 KiB) a close is noticed only at the next write.

Not supported: TLS, HTTP/2, upgrades (an Upgrade/CONNECT request is answered as a plain
request and the connection closed), request trailers (parsed and dropped), lifespan.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast
from urllib.parse import unquote

import httptools

from proxy.asgi import Headers, Message, Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("ringleader.httpserver")

# Reads up to this size are fed to the parser whole; it bounds how far a head that starts
# inside a piece may run past max_header_bytes before it is measured.
_SMALL_READ: Final = 4096
# A chunked body is fed in pieces of this size, for the same bound on what may follow it.
_CHUNKED_PIECE: Final = 4096
# Above this much unread request body, reading pauses until the app calls receive().
_READ_HIGH_WATER: Final = 64 * 1024
# A head and a body up to this size go out in one write; larger bodies in a writev.
_COALESCE: Final = 16 * 1024
# After an error answer, what the client still sends is read and discarded this long.
_LINGER_SECONDS: Final = 2.0

# Parse phases of the message being read.
_IDLE: Final = 0  # between messages: the next byte starts a head
_HEAD: Final = 1
_BODY: Final = 2

# Deadline kinds; a connection has at most one deadline, re-validated when it expires.
_NO_DEADLINE: Final = 0
_KEEPALIVE: Final = 1
_HEADERS: Final = 2
_BODY_READ: Final = 3
_SEND: Final = 4
_LINGER: Final = 5

# Response body framings.
_LENGTH: Final = 0
_CHUNKED: Final = 1
_NO_BODY: Final = 2
_UNTIL_CLOSE: Final = 3  # HTTP/1.0 client, streamed body without Content-Length


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""  # RFC 9112 §4: the reason phrase may be empty
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode("ascii"))


_STATUS_LINES: Final = [b""] * 100 + [_status_line(code) for code in range(100, 1000)]


def _plain(status: int, text: str) -> bytes:
    body = text.encode() + b"\n"
    return (
        _STATUS_LINES[status]
        + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body)
        + b"connection: close\r\n\r\n"
        + body
    )


_BAD_REQUEST: Final = _plain(400, "Bad Request")
_HEAD_TIMEOUT: Final = _plain(408, "Request Timeout: the request head took too long")
_HEAD_TOO_LARGE: Final = _plain(431, "Request Header Fields Too Large")
_UNAVAILABLE: Final = _plain(503, "Service Unavailable: too many connections")
_BAD_VERSION: Final = _plain(505, "HTTP Version Not Supported")
_BAD_CODING: Final = _plain(501, "Not Implemented: the only transfer coding accepted is chunked")
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_ERROR_HEADERS: Final = ((b"content-type", b"text/plain; charset=utf-8"),)
_ERROR_BODY: Final = b"Internal Server Error\n"

_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
_METHODS: Final = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE", "TRACE")
}
_REQUEST_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# Lengths of the response header names the server owns: connection and keep-alive (10),
# content-length (14), transfer-encoding (17). Other names skip the lower() and compare.
_FRAMING_LENGTHS: Final = frozenset({10, 14, 17})
_HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Response header names already checked to be tokens; bounded so that an app emitting
# endless distinct names cannot grow it without limit.
_VALID_NAMES: Final[set[bytes]] = set()
_VALID_NAMES_MAX: Final = 4096


def _check_name(name: bytes) -> None:
    if not isinstance(name, bytes) or _TOKEN.match(name) is None:
        raise ValueError(f"response header name {name!r} is not an HTTP token")
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(name)


class _Reject(Exception):
    """Raised in a parser callback: answer with `response` and close."""

    def __init__(self, response: bytes) -> None:
        super().__init__(response[:40])
        self.response = response


class _Cycle:
    """One request: its scope, its body as it arrives, and its response's state."""

    __slots__ = (
        "body",
        "body_size",
        "complete",
        "conn",
        "disconnected",
        "expect_continue",
        "final_sent",
        "head_only",
        "head_written",
        "headers",
        "http10",
        "keep_alive",
        "left",
        "mode",
        "received",
        "request_done",
        "scope",
        "started",
        "status",
        "task",
        "waiter",
    )

    def __init__(
        self,
        conn: _Connection,
        scope: Scope,
        head_only: bool,
        http10: bool,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.head_only = head_only
        self.http10 = http10
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body: list[bytes] | None = None  # unread request body
        self.body_size = 0
        self.received = 0  # request body bytes ever received
        self.request_done = False
        self.final_sent = False  # the more_body=False message went to the app
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False
        self.status = 0
        self.headers: Headers = ()
        self.head_written = False
        self.complete = False
        self.mode = _LENGTH
        self.left = 0  # Content-Length bytes still to send
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        conn = self.conn
        if self.expect_continue:
            self.expect_continue = False
            if not (self.head_written or self.disconnected or self.request_done):
                conn.write(_CONTINUE)
                conn.body_wanted()
        while True:
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            body = self.body
            if body:
                data = body[0] if len(body) == 1 else b"".join(body)
                self.body = None
                self.body_size = 0
                more = not self.request_done
                self.final_sent = not more
                if conn.reading_paused:
                    conn.update_reading()
                return {"type": "http.request", "body": data, "more_body": more}
            if self.request_done and not self.final_sent:
                self.final_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # Waits for body bytes, or (the body all read) for the response or a disconnect.
            waiter = self.waiter = conn.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        if self.disconnected:
            return  # the client is gone: nothing to write to
        conn = self.conn
        if self.started:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"expected http.response.body, got {message['type']!r}")
            if self.complete:
                raise RuntimeError("http.response.body sent after the response was complete")
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            if self.head_written:
                conn.write_body(self, body, more)
            else:
                conn.write_head(self, body, more)
            if conn.write_paused and not self.disconnected:
                await conn.drain()
            return
        if message["type"] != "http.response.start":
            raise RuntimeError(f"expected http.response.start, got {message['type']!r}")
        status = message["status"]
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise ValueError(f"status {status!r} is not an integer in 100-999")
        self.status = int(status)
        self.headers = message.get("headers", ())
        self.started = True


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body_left",
        "_completed",
        "_dry",
        "_expect",
        "_extensions",
        "_gone",
        "_head_left",
        "_headers",
        "_held",
        "_mid",
        "_parser",
        "_parsing",
        "_peer",
        "_pending_error",
        "_phase",
        "_queue",
        "_req_chunked",
        "_req_length",
        "_scope_base",
        "_server",
        "_sockname",
        "_tail",
        "_transport",
        "_url",
        "active",
        "blocked",
        "closed",
        "deadline",
        "deadline_kind",
        "drain_waiter",
        "loop",
        "reading_paused",
        "write_paused",
    )

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self.loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # True until accepted, and once closing: data_received then discards.
        self.blocked = True
        self.closed = False
        self._peer: tuple[str, int] | None = None
        self._sockname: tuple[str, int] | None = None
        self._extensions = {"ringleader.disconnected": self.disconnected}
        self._gone: list[asyncio.Future[None]] | None = None
        # The message being parsed.
        self._phase = _IDLE
        self._head_left = 0
        self._tail = b""  # last bytes of an unfinished head, to find a split CRLFCRLF
        self._body_left = 0  # Content-Length bytes still to read; -1: chunked
        self._dry = 0  # chunked-body bytes fed without yielding body (framing, trailers)
        self._completed = False  # a message completed during the current feed
        self._mid = False  # the current head began inside a piece, after another message
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._req_length: bytes | None = None
        self._req_chunked = False
        self._expect = False
        self._parsing: _Cycle | None = None  # once its head is complete
        # Requests being answered: `active` runs the app; `_queue` waits for it.
        self.active: _Cycle | None = None
        self._queue: deque[_Cycle] | None = None
        self._scope_base: dict[str, Any] = {}
        self._pending_error: bytes | None = None  # for a later message, sent after `active`
        self._held = b""
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE

    # -- transport callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        server = self._server
        if len(server.open_connections) >= server.max_connections or server.closing:
            # Refused before reading anything, so the answer costs no parsing.
            transport.write(_UNAVAILABLE)
            transport.close()
            return
        server.open_connections.add(self)
        self._transport = transport
        self.blocked = False
        high = server.write_high_water
        transport.set_write_buffer_limits(high=high, low=high // 4)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._peer = (str(peer[0]), int(peer[1]))
        name = transport.get_extra_info("sockname")
        if isinstance(name, tuple):
            self._sockname = (str(name[0]), int(name[1]))
        # What every request's scope on this connection shares.
        self._scope_base = {
            "type": "http",
            "asgi": _ASGI,
            "server": self._sockname,
            "client": self._peer,
            "scheme": "http",
            "root_path": "",
            "extensions": self._extensions,
        }
        self._set_deadline(_KEEPALIVE, server.keepalive_timeout)

    def data_received(self, data: bytes) -> None:
        if self.blocked:
            return  # closing or lingering: what the client sends now is discarded
        if self._held:
            self._held += data
            return
        self._consume(data)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost reports the disconnect

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None or self.closed:
            return
        self.closed = True
        self.blocked = True
        server = self._server
        server.open_connections.discard(self)
        self._disconnect_all()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for gone in self._gone or ():
            if not gone.done():
                gone.set_result(None)
        active = self.active
        if (
            server.cancel_on_disconnect
            and active is not None
            and active.task is not None
            and not active.complete
        ):
            active.task.cancel()
        self._held = b""
        server.check_drained()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._set_deadline(_SEND, self._server.send_timeout)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.deadline_kind == _SEND:
            self.deadline_kind = _NO_DEADLINE
            self.deadline = 0.0
            self.body_wanted()  # the SEND deadline may have replaced a body deadline
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is None or waiter.done():
            waiter = self.drain_waiter = self.loop.create_future()
        await waiter

    async def disconnected(self) -> None:
        """Completes when the client is gone (the `ringleader.disconnected` extension)."""
        if self.closed:
            return
        gone = self.loop.create_future()
        # Futures of callers that stopped waiting are dropped, so a long keep-alive
        # connection does not collect one per request.
        self._gone = [g for g in self._gone or () if not g.done()]
        self._gone.append(gone)
        await gone

    # -- feeding the parser -------------------------------------------------------------

    def _consume(self, data: bytes) -> None:
        """Feeds `data` in pieces that end on message boundaries where they can be known,
        and holds what belongs to a request that is not due yet."""
        while data:
            active = self.active
            if active is not None and self._parsing is not active:
                self._hold(data)
                return
            if self._phase == _BODY:
                left = self._body_left
                cut = left if left > 0 else _CHUNKED_PIECE
                if len(data) > cut:
                    piece = data[:cut]
                    data = data[cut:]
                else:
                    piece = data
                    data = b""
                parsing = self._parsing
                before = 0 if parsing is None else parsing.received
                if not self._feed(piece):
                    return
                if left < 0 and parsing is not None and self._parsing is parsing:
                    # Chunk framing and trailers are not body: bound them like a head.
                    self._dry = 0 if parsing.received != before else self._dry + len(piece)
                    if self._dry > self._server.max_header_bytes:
                        self._fail(_HEAD_TOO_LARGE)
                        return
                elif self._phase == _HEAD:
                    self._head_continues(piece, 0)
                continue
            if self._phase == _IDLE:
                self._phase = _HEAD
                self._head_left = self._server.max_header_bytes
                self._tail = b""
                self._mid = False
            left = self._head_left
            size = len(data)
            if size <= _SMALL_READ and size <= left:
                piece = data
                data = b""
            else:
                end = self._head_end(data)
                if end < 0:
                    if size >= left:
                        self._fail(_HEAD_TOO_LARGE)
                        return
                    piece = data
                    data = b""
                elif end > left:
                    self._fail(_HEAD_TOO_LARGE)
                    return
                elif end == size:
                    piece = data
                    data = b""
                else:
                    piece = data[:end]
                    data = data[end:]
            if not self._feed(piece):
                return
            if self._phase == _HEAD:
                self._head_continues(piece, left)
        phase = self._phase
        if phase == _HEAD:
            if self.active is None and self.deadline_kind != _HEADERS:
                self._set_deadline(_HEADERS, self._server.header_timeout)
        elif phase == _BODY and self._parsing is self.active and not self.reading_paused:
            self._set_deadline(_BODY_READ, self._server.body_timeout)

    def _head_continues(self, piece: bytes, budget: int) -> None:
        """Accounts for a head that goes on past `piece`, which had `budget` bytes left."""
        if self._mid:
            # It began inside the piece, after another message: its bytes there are known
            # only from its parsed parts (a header still being parsed, at most the piece,
            # is not counted). From here on it is counted byte by byte.
            self._mid = False
            self._head_left = self._server.max_header_bytes - self._head_seen()
            self._tail = piece[-3:]
        else:
            self._head_left = budget - len(piece)
            self._tail = (self._tail + piece[-3:])[-3:]

    def _head_end(self, data: bytes) -> int:
        """The offset in `data` just past the CRLFCRLF ending the head, or -1."""
        tail = self._tail
        if tail:
            found = (tail + data[:3]).find(b"\r\n\r\n")
            if found >= 0:
                return found + 4 - len(tail)
        found = data.find(b"\r\n\r\n")
        return -1 if found < 0 else found + 4

    def _head_seen(self) -> int:
        """A lower bound on the bytes of the head being parsed, from its parsed parts."""
        size = len(self._url) + 14  # shortest method, two spaces, HTTP/1.x, CRLF
        for name, value in self._headers:
            size += len(name) + len(value) + 3
        return size

    def _feed(self, piece: bytes) -> bool:
        self._completed = False
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserCallbackError as exc:
            reason = exc.__context__
            if isinstance(reason, _Reject):
                self._fail(reason.response)
            else:
                log.error("request parsing failed", exc_info=reason or exc)
                self._fail(_BAD_REQUEST)
            return False
        except httptools.HttpParserError:
            self._fail(_BAD_REQUEST)
            return False
        except httptools.HttpParserUpgrade:
            # The request is complete; what follows would be another protocol. It is
            # answered as a plain request and the connection closed after it.
            for cycle in self._cycles():
                cycle.keep_alive = False
            self.blocked = True
            return False
        return True

    def _hold(self, data: bytes) -> None:
        self._held += data
        if not self.reading_paused:
            self.reading_paused = True
            self._transport_or_fail().pause_reading()

    def body_wanted(self) -> None:
        """(Re)starts the body timeout if the server is reading a body for the app."""
        if self._phase == _BODY and self._parsing is self.active and not self.reading_paused:
            self._set_deadline(_BODY_READ, self._server.body_timeout)

    def update_reading(self) -> None:
        """Resumes reading once nothing is held and the app has read its body down."""
        active = self.active
        pause = bool(self._held) or (active is not None and active.body_size > _READ_HIGH_WATER)
        if pause == self.reading_paused or self.closed:
            return
        self.reading_paused = pause
        transport = self._transport_or_fail()
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()
            if self._phase == _BODY and self._parsing is active:
                self._set_deadline(_BODY_READ, self._server.body_timeout)

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._mid = self._completed
        self._url = b""
        self._headers = []
        self._req_length = None
        self._req_chunked = False
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase != _HEAD:
            return  # trailers of a chunked body: ASGI has no place for them
        name = name.lower()
        self._headers.append((name, value))
        if name in _REQUEST_FRAMING:
            if name == b"content-length":
                self._req_length = value
            elif name == b"transfer-encoding":
                if self._req_chunked or value.lower() != b"chunked":
                    raise _Reject(_BAD_CODING)
                self._req_chunked = True
            else:
                self._expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        parser = self._parser
        server = self._server
        version = parser.get_http_version()
        if version == "1.1":
            http10 = False
        elif version == "1.0":
            http10 = True
        else:
            raise _Reject(_BAD_VERSION)
        length = self._req_length
        if self._req_chunked and (http10 or length is not None):
            # RFC 9112 §6.1: faulty framing, the smuggling shape; llhttp already refuses
            # most of these.
            raise _Reject(_BAD_REQUEST)
        if self._mid and self._head_seen() > server.max_header_bytes:
            raise _Reject(_HEAD_TOO_LARGE)
        if self.deadline_kind == _HEADERS:
            self.deadline_kind = _NO_DEADLINE
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        url = self._url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        elif url == b"*":
            raw_path, query = url, b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise _Reject(_BAD_REQUEST) from None
            raw_path, query = parsed.path or b"/", parsed.query or b""
        text = raw_path.decode("latin-1")
        if self._req_chunked:
            self._body_left = -1
            self._dry = 0
            has_body = True
        elif length is not None:
            self._body_left = int(length)
            has_body = self._body_left > 0
        else:
            self._body_left = 0
            has_body = False
        scope: Scope = self._scope_base.copy()
        scope["http_version"] = version
        scope["method"] = method
        scope["path"] = unquote(text) if "%" in text else text
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        scope["headers"] = self._headers
        cycle = _Cycle(
            self,
            scope,
            method == "HEAD",
            http10,
            parser.should_keep_alive(),
            self._expect and has_body and not http10,
        )
        self._phase = _BODY
        self._parsing = cycle
        if self.active is None:
            self._start(cycle)
        elif self._queue is None:
            self._queue = deque((cycle,))
        else:
            self._queue.append(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self._parsing
        if cycle is None:
            return
        size = len(body)
        left = self._body_left
        if left > 0:
            self._body_left = left - size
        cycle.received += size
        if cycle.body is None:
            cycle.body = [body]
        else:
            cycle.body.append(body)
        cycle.body_size += size
        if cycle.waiter is not None:
            cycle.wake()
        if cycle.body_size > _READ_HIGH_WATER and cycle is self.active and not self.reading_paused:
            self.reading_paused = True
            self._transport_or_fail().pause_reading()
            if self.deadline_kind == _BODY_READ:
                self.deadline_kind = _NO_DEADLINE  # the app is behind, not the client

    def on_message_complete(self) -> None:
        self._completed = True
        self._phase = _IDLE
        cycle = self._parsing
        self._parsing = None
        if cycle is not None:
            cycle.request_done = True
            if cycle.waiter is not None:
                cycle.wake()

    # -- running the app ----------------------------------------------------------------

    def _start(self, cycle: _Cycle) -> None:
        self.active = cycle
        task = self.loop.create_task(self._run(cycle))
        cycle.task = task
        self._server.tasks.add(task)

    async def _run(self, cycle: _Cycle) -> None:
        server = self._server
        try:
            await server.app(cycle.scope, cycle.receive, cycle.send)
        except asyncio.CancelledError:
            self._app_failed(cycle)
        except Exception:
            scope = cycle.scope
            log.exception(
                "ASGI application raised",
                extra={"ctx": {"method": scope["method"], "path": scope["raw_path"][:200]}},
            )
            self._app_failed(cycle)
        else:
            if not cycle.complete and not cycle.disconnected:
                log.error("ASGI application returned without completing its response")
                self._app_failed(cycle)
        finally:
            task = cycle.task
            if task is not None:
                server.tasks.discard(task)
                if server.closing:
                    server.check_drained()

    def _app_failed(self, cycle: _Cycle) -> None:
        if cycle.disconnected or cycle.complete:
            return
        if cycle.head_written:
            self._close()  # the client must see a truncated response, not a whole one
            return
        cycle.started = True
        cycle.status = 500
        cycle.headers = _ERROR_HEADERS
        self.write_head(cycle, _ERROR_BODY, False)

    # -- writing responses --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    def write_head(
        self,
        cycle: _Cycle,
        body: bytes,
        more: bool,
        _valid: set[bytes] = _VALID_NAMES,
        _framing: frozenset[int] = _FRAMING_LENGTHS,
    ) -> None:
        status = cycle.status
        lines: list[bytes] = []
        append = lines.append
        length: bytes | None = None
        for name, value in cycle.headers:
            if name not in _valid:
                _check_name(name)
            if len(name) in _framing:
                low = name.lower()
                if low == b"content-length":
                    if length is not None and value != length:
                        raise ValueError("the response has two different Content-Length values")
                    if not value.isdigit() or len(value) > 18:
                        raise ValueError(f"response Content-Length {value!r} is not a number")
                    length = value
                    continue
                if low in _HOP_BY_HOP:
                    continue
            append(name + b": " + value)
        size = len(body)
        if cycle.head_only or status < 200 or status == 204 or status == 304:
            mode = _NO_BODY
            if length is not None and (status == 304 or (cycle.head_only and status >= 200)):
                lines.append(b"content-length: " + length)
        elif length is not None:
            mode = _LENGTH
            cycle.left = int(length)
            lines.append(b"content-length: " + length)
        elif not more:
            mode = _LENGTH
            cycle.left = size
            lines.append(b"content-length: %d" % size)
        elif cycle.http10:
            mode = _UNTIL_CLOSE
            cycle.keep_alive = False
        else:
            mode = _CHUNKED
            lines.append(b"transfer-encoding: chunked")
        keep = (
            cycle.keep_alive and cycle.request_done and status >= 200 and not self._server.closing
        )
        cycle.keep_alive = keep
        if not keep:
            lines.append(b"connection: close")
        elif cycle.http10:
            lines.append(b"connection: keep-alive")
        if lines:
            head = _STATUS_LINES[status] + b"\r\n".join(lines) + b"\r\n\r\n"
            count = len(lines) + 2
        else:
            head = _STATUS_LINES[status] + b"\r\n"
            count = 2
        if head.count(b"\n") != count or head.count(b"\r") != count:
            raise ValueError("a response header name or value contains CR or LF")
        cycle.mode = mode
        cycle.head_written = True
        transport = self._transport
        if transport is None or self.closed:
            return
        if mode == _LENGTH:
            left = cycle.left - size
            if left < 0:
                self._framing_error(cycle, "the body is longer than its Content-Length")
                return
            cycle.left = left
            if not size:
                transport.write(head)
            elif size <= _COALESCE:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            if not more:
                if left:
                    self._framing_error(cycle, "the body is shorter than its Content-Length")
                else:
                    self._finish(cycle)
        elif mode == _CHUNKED:
            if not size:
                transport.write(head)
            elif size <= _COALESCE:
                transport.write(head + b"%x\r\n" % size + body + b"\r\n")
            else:
                transport.writelines((head + b"%x\r\n" % size, body, b"\r\n"))
        elif mode == _NO_BODY:
            transport.write(head)
            if not more:
                self._finish(cycle)
        else:
            if not size:
                transport.write(head)
            elif size <= _COALESCE:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            if not more:
                self._finish(cycle)

    def write_body(self, cycle: _Cycle, body: bytes, more: bool) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        mode = cycle.mode
        size = len(body)
        if mode == _CHUNKED:
            if size:
                if more:
                    transport.writelines((b"%x\r\n" % size, body, b"\r\n"))
                else:
                    transport.writelines((b"%x\r\n" % size, body, b"\r\n0\r\n\r\n"))
            elif not more:
                transport.write(b"0\r\n\r\n")
        elif mode == _LENGTH:
            left = cycle.left - size
            if left < 0:
                self._framing_error(cycle, "the body is longer than its Content-Length")
                return
            if not more and left:
                if size:
                    transport.write(body)
                self._framing_error(cycle, "the body is shorter than its Content-Length")
                return
            cycle.left = left
            if size:
                transport.write(body)
        elif mode == _UNTIL_CLOSE and size:
            transport.write(body)
        if not more:
            self._finish(cycle)

    def _framing_error(self, cycle: _Cycle, why: str) -> None:
        scope = cycle.scope
        log.error(
            "response closed: %s",
            why,
            extra={"ctx": {"method": scope["method"], "path": scope["raw_path"][:200]}},
        )
        self._close()

    def _finish(self, cycle: _Cycle) -> None:
        """The response is complete: answer what is queued or held, or wait idle."""
        cycle.complete = True
        if cycle.waiter is not None:
            cycle.wake()
        self.active = None
        if not cycle.keep_alive or self._server.closing:
            self._close()
            return
        queue = self._queue
        if queue:
            self._start(queue.popleft())
        elif self._pending_error is not None:
            self._fail(self._pending_error)
            return
        held = self._held
        if held:
            self._held = b""
            self._consume(held)
        if self.reading_paused and not self._held and not self.blocked:
            self.update_reading()
        if self.active is None and self._phase == _IDLE and not self.blocked:
            self._set_deadline(_KEEPALIVE, self._server.keepalive_timeout)

    # -- closing ------------------------------------------------------------------------

    def _cycles(self) -> list[_Cycle]:
        cycles = [] if self.active is None else [self.active]
        if self._queue:
            cycles += self._queue
        return cycles

    def _disconnect_all(self) -> None:
        for cycle in self._cycles():
            cycle.disconnected = True
            cycle.wake()

    def _close(self) -> None:
        self.blocked = True
        self._disconnect_all()
        if self._transport is not None:
            self._transport.close()

    def _fail(self, response: bytes) -> None:
        """Answers a request the server refuses itself (400, 408, 431, 505) and closes,
        lingering so that the client reads the answer rather than a reset."""
        active = self.active
        if active is not None and self._parsing is not active and not self.blocked:
            # A later message is at fault: the one being answered finishes first.
            self._pending_error = response
            self.blocked = True
            return
        if active is not None and active.head_written:
            self._close()
            return
        self.blocked = True
        self._disconnect_all()
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            return
        transport.write(response)
        transport.write_eof()
        self._held = b""
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        self._set_deadline(_LINGER, _LINGER_SECONDS)

    def _transport_or_fail(self) -> asyncio.Transport:
        transport = self._transport
        if transport is None:
            raise RuntimeError("connection has no transport")
        return transport

    def _set_deadline(self, kind: int, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds
        self.deadline_kind = kind

    def expire_if_due(self, now: float) -> None:
        """Acts on the deadline if it has passed and still applies."""
        if not 0.0 < self.deadline <= now:
            return
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        if self.closed:
            return
        if kind == _KEEPALIVE:
            if self.active is None and self._phase == _IDLE and not self._held:
                if self.write_paused:
                    self.abort()  # the last response is still unread: the reader stalled
                else:
                    self._close()
        elif kind == _HEADERS:
            if self._phase == _HEAD and self.active is None and not self.blocked:
                self._fail(_HEAD_TIMEOUT)
        elif kind == _BODY_READ:
            if self._phase == _BODY and self._parsing is self.active is not None:
                if self.reading_paused:
                    self._set_deadline(_BODY_READ, self._server.body_timeout)
                else:
                    self._close()
        elif kind == _SEND:
            if self.write_paused:
                self._disconnect_all()
                self._transport_or_fail().abort()
        elif kind == _LINGER:
            self._transport_or_fail().abort()

    def shutdown(self) -> None:
        """Graceful shutdown: close now if no request is in progress; else `_finish`
        closes after the response (the server is `closing`)."""
        if self.blocked or self.closed:
            if not self.closed and self.active is None and self._transport is not None:
                self._transport.close()
            return
        if self.active is None:
            self._close()

    def abort(self) -> None:
        self._disconnect_all()
        if self._transport is not None:
            self._transport.abort()


class Server:
    """Serves `app` on a listening socket until `should_exit` is set (see the module
    docstring for the limits). `serve()` returns after a graceful shutdown."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int = 32 * 1024,
        header_timeout: float = 10.0,
        keepalive_timeout: float = 5.0,
        body_timeout: float = 30.0,
        send_timeout: float = 30.0,
        max_connections: int = 1024,
        write_high_water: int = 64 * 1024,
        drain_timeout: float = 10.0,
        cancel_on_disconnect: bool = False,
        backlog: int = 2048,
    ) -> None:
        timeouts = (header_timeout, keepalive_timeout, body_timeout, send_timeout)
        if min(timeouts) <= 0 or drain_timeout < 0:
            raise ValueError("timeouts must be positive")
        if max_header_bytes < 64 or max_connections < 1 or write_high_water < 1024:
            raise ValueError("max_header_bytes >= 64, max_connections >= 1, high water >= 1 KiB")
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.max_connections = max_connections
        self.write_high_water = write_high_water
        self.drain_timeout = drain_timeout
        self.cancel_on_disconnect = cancel_on_disconnect
        self.backlog = backlog
        # Deadlines are checked this often; each fires up to one period late.
        self.sweep_period = min(1.0, max(0.01, min(timeouts) / 4))
        self.open_connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._exit_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None
        self._drained: asyncio.Future[None] | None = None
        self._stopped: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def should_exit(self) -> bool:
        return self._exit_requested

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        """Settable from a signal handler or from another thread."""
        self._exit_requested = value
        loop, event = self._loop, self._exit
        if value and loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    @property
    def connections(self) -> int:
        return len(self.open_connections)

    async def serve(self, sock: socket.socket) -> None:
        """Serves the listening `sock` until `should_exit`, then drains: stops accepting,
        closes idle connections, lets in-flight requests finish for up to
        `drain_timeout`, then cancels what is left and returns."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = asyncio.Event()
        self._stopped = asyncio.Event()
        if self._exit_requested:
            self._exit.set()
        listener = await loop.create_server(
            lambda: _Connection(self, loop), sock=sock, backlog=self.backlog
        )
        self._sweeper = loop.call_later(self.sweep_period, self._sweep)
        try:
            await self._exit.wait()
        finally:
            try:
                await self._drain(listener)
            finally:
                if self._sweeper is not None:
                    self._sweeper.cancel()
                    self._sweeper = None
                self._stopped.set()

    async def shutdown(self) -> None:
        """Sets `should_exit` and waits until `serve()` has drained."""
        self.should_exit = True
        if self._stopped is not None:
            await self._stopped.wait()

    def _sweep(self) -> None:
        loop = self._loop
        if loop is None or self._sweeper is None:
            return
        now = loop.time()
        due = [c for c in self.open_connections if 0.0 < c.deadline <= now]
        for conn in due:
            conn.expire_if_due(now)
        self._sweeper = loop.call_later(self.sweep_period, self._sweep)

    def check_drained(self) -> None:
        drained = self._drained
        if (
            drained is not None
            and not drained.done()
            and not self.open_connections
            and not self.tasks
        ):
            drained.set_result(None)

    async def _drain(self, listener: asyncio.AbstractServer) -> None:
        self.closing = True
        listener.close()
        for conn in list(self.open_connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        self._drained = loop.create_future()
        self.check_drained()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), self.drain_timeout)
        except TimeoutError:
            log.warning(
                "drain bound reached",
                extra={
                    "ctx": {"connections": len(self.open_connections), "tasks": len(self.tasks)}
                },
            )
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.open_connections):
            conn.abort()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)
