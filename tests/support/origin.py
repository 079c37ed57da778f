"""Test origins for the HTTP cache: real HTTP servers whose answers tests control.

Three servers speak one protocol and share one pure function, `decide`, for what to
answer; they differ only in how the answer reaches the wire:

  uvicorn    an ASGI app on uvicorn: lowercase header names on the wire
  titlecase  stdlib http.server: Title-Case names, its own Server and Date lines
  raw        asyncio streams, every byte written here: Title-Case names and edge replies

`python -m tests.support.origin PORT` runs the uvicorn one; tests.support.origins starts
any kind (and nginx in front of a titlecase one) as processes the tests own.

Each resource is named by the first path segment (``/NAME/anything?query``). Tests
configure a name with ``PUT /__config/NAME`` (JSON, fields below; an unknown field, or one
this server cannot honour, is a 400) and read what the origin saw with
``GET /__stats/NAME``: ``{"counts": {METHOD: n, "total": n}, "requests": [{method,
target, headers, body_length}, ...]}``, the last 50 requests, header names exactly as
they arrived (uvicorn lowercases them on the way in). Everything the origin does is driven
by that state, so a test owns its names and never resets the server.

Config fields (all optional):
  status        response status (200), sent as-is; an unregistered one (999) goes out
                from titlecase and raw, while uvicorn fails on it
  headers       [[name, value], ...] added to every answer for the name; an all-lowercase
                name is sent in Title-Case by the titlecase and raw origins
                ("cache-control" -> "Cache-Control"), any other name as given
  body          response body text ("body of NAME")
  size          instead of body: that many bytes of "x"
  chunked       send the body in 3 chunks, Transfer-Encoding: chunked, no Content-Length
  delay         seconds to wait before answering
  etag          ETag; If-None-Match containing it gets a 304 (GET and HEAD)
  last_modified Last-Modified; If-Modified-Since equal to it gets a 304 (GET and HEAD)
  echo          a request header name whose value is appended to the body (for Vary)
  counter_body  append the name's request count (this request included, counted on
                arrival, before any delay) to the body
  methods       {"POST": {field: value, ...}, ...} overrides for one method
Raw origin only:
  raw           the complete response, sent verbatim (latin-1); only `close` and `delay`
                still apply
  no_length     no Content-Length and no chunking: the body ends when the connection
                closes (no Connection line unless `close`)
  close         send Connection: close and close the connection after the answer
  informational [103, ...] interim responses (status line only) sent before the answer
  pause         with chunked: seconds between the chunks (the head goes out at once); a
                client that goes away meanwhile is counted as "aborted" in the stats

Every answer whose status allows a body carries Content-Length or chunked framing (unless
`no_length`, which wins over `chunked`), so keep-alive works; 1xx, 204 and 304 answers
carry neither. A HEAD answer has the framing lines a GET would get and no body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import http
import io
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

LOOPBACK = "127.0.0.1"
KEEP_REQUESTS = 50
# Fields a `methods` override may set too; "methods" itself is structural.
COMMON_FIELDS = frozenset(
    {"status", "headers", "body", "size", "chunked", "delay", "etag", "last_modified",
     "echo", "counter_body"}
)  # fmt: skip
RAW_FIELDS = frozenset({"raw", "no_length", "close", "informational", "pause"})
RAW_SERVER = "raw-origin"
# Request heads above this are refused: the proxy's own limit is 32 KiB.
MAX_HEAD = 1 << 20

Header = tuple[str, str]


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: list[Header]
    body: bytes = b""

    @property
    def path(self) -> str:
        return unquote(self.target.split("?", 1)[0])

    def header(self, name: str) -> str | None:
        """The last value of a header, whatever the case of its name."""
        found = None
        for key, value in self.headers:
            if key.lower() == name.lower():
                found = value
        return found


@dataclass(frozen=True)
class Reply:
    """What to answer. `headers` are names as configured (plus ETag, Last-Modified);
    framing and Connection come from the other fields, see `wire_headers`."""

    status: int
    headers: list[Header]
    body: bytes = b""
    chunked: bool = False
    no_length: bool = False
    close: bool = False
    delay: float = 0.0
    pause: float = 0.0
    informational: tuple[int, ...] = ()
    raw: bytes | None = None
    head: bool = False

    @property
    def bodyless(self) -> bool:
        """The status forbids a body and framing fields (RFC 9110 §6.4.1)."""
        return self.status < 200 or self.status in (204, 304)

    def framing(self) -> list[Header]:
        if self.bodyless or self.no_length:
            return []
        if self.chunked:
            return [("Transfer-Encoding", "chunked")]
        return [("Content-Length", str(len(self.body)))]

    def wire_headers(self) -> list[Header]:
        """The header lines a Title-Case server writes after Server and Date."""
        lines = [(title_case(k), v) for k, v in self.headers] + self.framing()
        if self.close:
            lines.append(("Connection", "close"))
        return lines

    def chunks(self) -> list[bytes]:
        third = max(len(self.body) // 3, 1)
        return [self.body[i : i + third] for i in range(0, len(self.body), third)]

    def wire_body(self) -> bytes:
        """The body as framed on the wire."""
        if self.head or self.bodyless:
            return b""
        if not self.chunked or self.no_length:
            return self.body
        return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in self.chunks()) + b"0\r\n\r\n"


def title_case(name: str) -> str:
    """How http.server-style code writes a name a test gave in lowercase."""
    if name != name.lower():
        return name
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def decide(name: str, config: Mapping[str, Any], request: Request, count: int) -> Reply:
    """The answer for `request` to resource `name` configured with `config`, where
    `count` is how many requests for the name arrived, this one included."""
    merged = dict(config)
    merged.update(config.get("methods", {}).get(request.method, {}))
    common: dict[str, Any] = {
        "delay": float(merged.get("delay") or 0),
        "close": bool(merged.get("close")),
        "head": request.method == "HEAD",
    }
    if merged.get("raw") is not None:
        return Reply(0, [], raw=str(merged["raw"]).encode("latin-1"), **common)
    common["informational"] = tuple(int(s) for s in merged.get("informational", ()))
    common["no_length"] = bool(merged.get("no_length"))
    common["pause"] = float(merged.get("pause") or 0)
    headers: list[Header] = [(str(k), str(v)) for k, v in merged.get("headers", [])]
    etag = merged.get("etag")
    last_modified = merged.get("last_modified")
    if etag:
        headers.append(("ETag", etag))
    if last_modified:
        headers.append(("Last-Modified", last_modified))
    if request.method in ("GET", "HEAD") and (
        (etag and etag in (request.header("if-none-match") or ""))
        or (last_modified and request.header("if-modified-since") == last_modified)
    ):
        return Reply(304, headers, **common)
    if "size" in merged:
        body = b"x" * int(merged["size"])
    else:
        body = str(merged.get("body", f"body of {name}")).encode()
    if merged.get("echo"):
        body += b" " + (request.header(merged["echo"]) or "-").encode()
    if merged.get("counter_body"):
        body += b" #%d" % count
    status = int(merged.get("status", 200))
    return Reply(status, headers, body, chunked=bool(merged.get("chunked")), **common)


def config_error(config: object, fields: frozenset[str]) -> str | None:
    """Why `config` cannot be honoured by a server that knows `fields`, or None."""
    if not isinstance(config, dict):
        return "a config is a JSON object"
    overrides = config.get("methods", {})
    if not isinstance(overrides, dict) or not all(isinstance(o, dict) for o in overrides.values()):
        return "methods maps a method to an object of fields"
    for given in (set(config) - {"methods"}, *(set(o) for o in overrides.values())):
        if unknown := given - fields:
            return f"fields this origin does not support: {sorted(unknown)}"
    return None


class OriginState:
    """Configs, counts and the request log of one origin process (thread-safe)."""

    def __init__(self, fields: frozenset[str] = COMMON_FIELDS) -> None:
        self._fields = fields
        self._lock = threading.Lock()
        self._configs: dict[str, dict[str, Any]] = {}
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    def handle(self, request: Request) -> Reply:
        parts = request.path.strip("/").split("/", 1)
        name = parts[0]
        if name in ("__config", "__stats"):
            if len(parts) < 2 or not parts[1]:
                return _text(404, f"use /{name}/NAME")
            if name == "__config":
                return self._configure(parts[1], request.body)
            return self._stats(parts[1])
        with self._lock:
            counts = self._counts[name]
            counts[request.method] += 1
            counts["total"] += 1
            log = self._requests[name]
            log.append(
                {
                    "method": request.method,
                    "target": request.target,
                    "headers": [list(h) for h in request.headers],
                    "body_length": len(request.body),
                }
            )
            del log[:-KEEP_REQUESTS]
            return decide(name, self._configs.get(name, {}), request, counts["total"])

    def aborted(self, request: Request) -> None:
        """The client went away before the whole answer to ``request`` was sent."""
        with self._lock:
            self._counts[request.path.strip("/").split("/", 1)[0]]["aborted"] += 1

    def _configure(self, name: str, body: bytes) -> Reply:
        try:
            config = json.loads(body)
        except ValueError as exc:
            return _text(400, f"config is not JSON: {exc}")
        if error := config_error(config, self._fields):
            return _text(400, error)
        with self._lock:
            self._configs[name] = config
        return Reply(204, [])

    def _stats(self, name: str) -> Reply:
        with self._lock:
            stats = {"counts": dict(self._counts[name]), "requests": list(self._requests[name])}
        return Reply(200, [("Content-Type", "application/json")], json.dumps(stats).encode())


def _text(status: int, message: str) -> Reply:
    return Reply(status, [("Content-Type", "text/plain")], message.encode())


# -- uvicorn ------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_app(state: OriginState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += bytes(message.get("body", b""))
            if not message.get("more_body", False):
                break
        query = scope["query_string"].decode("latin-1")
        target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        reply = state.handle(Request(scope["method"], target, headers, body))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        # uvicorn writes its own chunked framing when no Content-Length is given.
        lines = reply.headers + ([] if reply.chunked else reply.framing())
        out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in lines]
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        for chunk in [] if reply.bodyless else reply.chunks() if reply.chunked else [reply.body]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def serve_uvicorn(port: int) -> None:
    import uvicorn

    uvicorn.run(
        asgi_app(OriginState()),
        host=LOOPBACK,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )


# -- http.server ---------------------------------------------------------------------------


def _read_chunked(rfile: io.BufferedIOBase) -> bytes:
    parts: list[bytes] = []
    while size := int(rfile.readline(65537).split(b";", 1)[0], 16):
        parts.append(rfile.read(size))
        rfile.readline(3)
    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
        pass
    return b"".join(parts)


class TitleCaseHandler(BaseHTTPRequestHandler):
    """Answers every method through `_serve`; names go out as `send_header` writes them."""

    protocol_version = "HTTP/1.1"
    state: ClassVar[OriginState]

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = _read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(self.command, self.path, list(self.headers.items()), body)
        reply = self.state.handle(request)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            for key, value in reply.wire_headers():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(reply.wire_body())
        except ConnectionError:
            # The client gave up (a proxy timeout during `delay`): nothing to answer.
            self.close_connection = True


class TitleCaseServer(ThreadingHTTPServer):
    # A burst of concurrent misses must not overflow the default backlog of 5.
    request_queue_size = 128


def serve_titlecase(port: int) -> None:
    TitleCaseHandler.state = OriginState()
    with TitleCaseServer((LOOPBACK, port), TitleCaseHandler) as server:
        server.serve_forever()


# -- raw ---------------------------------------------------------------------------------


class BadRequest(Exception):
    pass


async def read_head(reader: asyncio.StreamReader) -> Request | None:
    """A request without its body; None when the peer closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("connection closed inside a request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(f"bad request line {lines[0]!r}") from None
    headers: list[Header] = []
    for line in lines[1:]:
        key, colon, value = line.partition(":")
        if not colon or not key or key != key.strip():
            raise BadRequest(f"bad header line {line!r}")
        headers.append((key, value.strip(" \t")))
    return Request(method, target, headers)


async def read_body(reader: asyncio.StreamReader, head: Request) -> bytes:
    try:
        if "chunked" in (head.header("transfer-encoding") or "").lower():
            parts: list[bytes] = []
            while size := int((await reader.readuntil(b"\n")).split(b";", 1)[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            while (await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                pass
            return b"".join(parts)
        length = head.header("content-length")
        return await reader.readexactly(int(length)) if length else b""
    except ValueError:
        raise BadRequest("bad body framing") from None


def render(reply: Reply) -> bytes:
    """The answer's bytes as the raw origin writes them."""
    if reply.raw is not None:
        return reply.raw
    interim = b"".join(status_line(s) + b"\r\n" for s in reply.informational)
    lines = [("Server", RAW_SERVER), ("Date", email.utils.formatdate(usegmt=True))]
    lines += reply.wire_headers()
    fields = "".join(f"{k}: {v}\r\n" for k, v in lines).encode("latin-1")
    return interim + status_line(reply.status) + fields + b"\r\n" + reply.wire_body()


def _wants_close(request: Request, reply: Reply) -> bool:
    connection = (request.header("connection") or "").lower()
    return reply.close or reply.no_length or "close" in connection


async def serve_connection(
    state: OriginState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                head = await read_head(reader)
                if head is None:
                    break
                if (head.header("expect") or "").lower() == "100-continue":
                    writer.write(status_line(100) + b"\r\n")
                request = dataclasses.replace(head, body=await read_body(reader, head))
            except BadRequest as exc:
                writer.write(render(Reply(400, [], str(exc).encode(), close=True)))
                break
            reply = state.handle(request)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.pause and reply.chunked and not reply.bodyless:
                await _trickle(state, request, reply, reader, writer)
                break
            writer.write(render(reply))
            await writer.drain()
            if _wants_close(request, reply):
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _trickle(
    state: OriginState,
    request: Request,
    reply: Reply,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """The head, then one chunk every `reply.pause` seconds; the connection closes after."""
    writer.write(render(dataclasses.replace(reply, head=True)))
    try:
        for chunk in reply.chunks():
            await writer.drain()
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await asyncio.sleep(reply.pause)
            if reader.at_eof() or writer.is_closing():
                raise ConnectionResetError
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        state.aborted(request)


def serve_raw(port: int) -> None:
    state = OriginState(COMMON_FIELDS | RAW_FIELDS)

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: serve_connection(state, r, w),
            LOOPBACK,
            port,
            limit=MAX_HEAD,
            backlog=128,
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


SERVERS: dict[str, Callable[[int], None]] = {
    "uvicorn": serve_uvicorn,
    "titlecase": serve_titlecase,
    "raw": serve_raw,
}


def main() -> None:
    serve_uvicorn(int(sys.argv[1]))


if __name__ == "__main__":
    main()
