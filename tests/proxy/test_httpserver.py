"""proxy/httpserver.py against real clients: raw sockets for byte-exact framing, curl,
Node's fetch (undici refuses malformed framing) and httpx.

Most tests run the server on its own uvloop thread; the memory bounds run it as a separate
process (`python -m tests.proxy.test_httpserver serve PORT OPTIONS`) so its RSS is its own.
Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from proxy.asgi import Message, Receive, Scope, Send
from proxy.httpserver import Server
from tests.support.servers import LOOPBACK, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[2]
BODY = b"v" * 100


# -- the app under test ---------------------------------------------------------------------


@dataclass
class Recorder:
    """What the app saw, shared between the server thread and the test."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    sent: int = 0

    def add(self, kind: str, value: Any = None) -> None:
        with self.lock:
            self.events.append((kind, value))

    def kinds(self) -> list[str]:
        with self.lock:
            return [kind for kind, _ in self.events]

    def values(self, kind: str) -> list[Any]:
        with self.lock:
            return [value for k, value in self.events if k == kind]

    def gate(self, name: str) -> asyncio.Event:
        if name not in self.gates:
            self.gates[name] = asyncio.Event()
        return self.gates[name]

    def open(self, name: str) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(lambda: self.gate(name).set())


async def start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def body(send: Send, data: bytes, more: bool = False) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def read_all(receive: Receive) -> tuple[bytes, list[Message]]:
    chunks: list[bytes] = []
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] == "http.disconnect":
            return b"".join(chunks), messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def make_app(rec: Recorder) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        rec.loop = asyncio.get_running_loop()
        path: bytes = scope["raw_path"]
        rec.add("request", path)
        if path == b"/cl":
            await start(send, 200, [(b"content-type", b"text/plain"), (b"Content-Length", b"5")])
            await body(send, b"hel", more=True)
            await body(send, b"lo")
        elif path == b"/oneshot":
            await start(send, 200, [(b"x-a", b"1")])
            await body(send, BODY)
        elif path == b"/stream":
            await start(send, 200, [(b"content-type", b"text/plain")])
            for part in (b"one", b"", b"two"):
                await body(send, part, more=True)
            await body(send, b"three")
        elif path == b"/hop":
            headers = [
                (b"transfer-encoding", b"chunked"),
                (b"Connection", b"keep-alive"),
                (b"keep-alive", b"timeout=99"),
                (b"X-Kept", b"yes"),
            ]
            await start(send, 200, headers)
            await body(send, b"abc")
        elif path == b"/head-cl":
            await start(send, 200, [(b"content-length", b"1234")])
            await body(send, b"ignored for HEAD" if scope["method"] == "HEAD" else b"x" * 1234)
        elif path in (b"/204", b"/304"):
            await start(send, int(path[1:]), [(b"content-length", b"7"), (b"etag", b'"e"')])
            await body(send, b"nothing")
        elif path == b"/204-bare":
            await start(send, 204, [])
            await body(send, b"")
        elif path == b"/999":
            await start(send, 999, [])
            await body(send, b"odd")
        elif path == b"/599":
            await start(send, 599, [])
            await body(send, b"")
        elif path == b"/short-cl":
            await start(send, 200, [(b"content-length", b"10")])
            await body(send, b"12345")
        elif path == b"/long-cl":
            await start(send, 200, [(b"content-length", b"3")])
            await body(send, b"12", more=True)
            await body(send, b"345")
        elif path == b"/boom":
            raise RuntimeError("boom before start")
        elif path == b"/boom-late":
            await start(send, 200, [])
            await body(send, b"partial", more=True)
            raise RuntimeError("boom after start")
        elif path == b"/no-response":
            return
        elif path == b"/bad-header":
            await start(send, 200, [(b"x-evil", b"a\r\ninjected: 1")])
            await body(send, b"")
        elif path == b"/echo":
            data, messages = await read_all(receive)
            rec.add("messages", messages)
            await start(send, 200, [(b"content-type", b"application/octet-stream")])
            await body(send, data)
        elif path == b"/no-read":
            await start(send, 413, [])
            await body(send, b"too large")
        elif path == b"/scope":
            info = {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode(),
                "query_string": scope["query_string"].decode(),
                "http_version": scope["http_version"],
                "scheme": scope["scheme"],
                "client": list(scope["client"]),
                "server": list(scope["server"]),
                "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
            }
            await start(send, 200, [(b"content-type", b"application/json")])
            await body(send, json.dumps(info).encode())
        elif path == b"/gate":
            await rec.gate("gate").wait()
            await start(send, 200, [])
            await body(send, b"released")
            rec.add("done", path)
        elif path == b"/hang":
            await asyncio.Event().wait()
        elif path == b"/wait-disconnect":
            data, _ = await read_all(receive)
            rec.add("body", data)
            rec.add("receive", await receive())
        elif path == b"/watch-disconnect":
            gone = scope["extensions"]["ringleader.disconnected"]
            try:
                await gone()
                rec.add("extension", "disconnected")
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                rec.add("cancelled", path)
                raise
        elif path == b"/flood":
            await start(send, 200, [(b"content-type", b"application/octet-stream")])
            chunk = b"f" * 16384
            for _ in range(2048):  # 32 MiB
                await body(send, chunk, more=True)
                rec.sent += len(chunk)
            await body(send, b"")
            rec.add("flood-done", rec.sent)
        else:
            await start(send, 404, [])
            await body(send, b"no route")

    return app


# -- the server on a thread -----------------------------------------------------------------


class Running:
    """A Server on its own uvloop thread, on a free loopback port."""

    def __init__(self, rec: Recorder, rcvbuf: int = 0, **options: Any) -> None:
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:  # inherited by accepted sockets; fixes the kernel's share of buffering
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((LOOPBACK, self.port))
        self.sock.listen(1024)
        self.server = Server(make_app(rec), **options)
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            uvloop.run(self.server.serve(self.sock))
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        wait_until(self.finished.is_set, timeout, "the server to return from serve()")
        self.thread.join(timeout)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def serve(rec: Recorder) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def run(**options: Any) -> Running:
        running = Running(rec, **options)
        started.append(running)
        return running

    yield run
    for running in started:
        running.stop()
        assert running.error is None, running.error


@pytest.fixture
def srv(serve: Callable[..., Running]) -> Running:
    return serve()


# -- raw HTTP helpers -----------------------------------------------------------------------


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(262144)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Sends `request` (which should end with a Connection: close request) and returns
    all the bytes until the server closes."""
    with connect(port, timeout) as sock:
        sock.sendall(request)
        return read_until_closed(sock, timeout)


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes

    def get(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


def parse_responses(data: bytes, head_requests: int = 0) -> list[Response]:
    """Strictly splits a byte stream into responses; fails on ambiguous framing."""
    out: list[Response] = []
    at = 0
    while at < len(data):
        end = data.index(b"\r\n\r\n", at) + 4
        raw_head = data[at:end]
        lines = raw_head[:-4].split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.1 (\d{3}) (.*)", lines[0])
        assert match, lines[0]
        status = int(match.group(1))
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            assert re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), line
            headers.append((name, value))
        names = [n.lower() for n, _ in headers]
        assert not (b"content-length" in names and b"transfer-encoding" in names), raw_head
        at = end
        resp = Response(status, match.group(2), headers, b"", raw_head)
        if status < 200 or status in (204, 304) or len(out) < head_requests:
            pass  # no body
        elif b"transfer-encoding" in names:
            assert resp.get(b"transfer-encoding") == [b"chunked"]
            chunks = []
            while True:
                size_end = data.index(b"\r\n", at)
                size = int(data[at:size_end], 16)
                start = size_end + 2
                assert data[start + size : start + size + 2] == b"\r\n"
                at = start + size + 2
                if size == 0:
                    break
                chunks.append(data[start : start + size])
            resp.body = b"".join(chunks)
        elif b"content-length" in names:
            length = int(resp.get(b"content-length")[0])
            assert len(data) - at >= length, f"truncated: {len(data) - at} < {length}"
            resp.body = data[at : at + length]
            at += length
        else:
            resp.body, at = data[at:], len(data)  # close-delimited
        out.append(resp)
    return out


def one(port: int, request: bytes) -> Response:
    responses = parse_responses(exchange(port, request))
    assert len(responses) == 1, responses
    return responses[0]


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: t", *extra, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def recv_some(sock: socket.socket, want: bytes, timeout: float = 5.0) -> bytes:
    """Reads until `want` appears in what was read (or the deadline)."""
    sock.settimeout(0.05)
    data = b""
    deadline = time.monotonic() + timeout
    while want not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer has closed: a read returns EOF (or a reset), not a timeout."""
    sock.settimeout(0.01)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


# -- framing --------------------------------------------------------------------------------


def test_content_length_from_the_app_is_used_as_given(srv: Running) -> None:
    raw = exchange(srv.port, get("/cl"))
    assert raw == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
        b"connection: close\r\n\r\nhello"
    )


def test_one_shot_body_gets_content_length(srv: Running) -> None:
    raw = exchange(srv.port, get("/oneshot"))
    assert raw == (
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 100\r\nconnection: close\r\n\r\n" + BODY
    )


def test_streamed_body_is_chunked_and_empty_parts_are_skipped(srv: Running) -> None:
    raw = exchange(srv.port, get("/stream"))
    assert raw == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\n3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
    )


def test_app_hop_by_hop_headers_are_dropped(srv: Running) -> None:
    raw = exchange(srv.port, get("/hop"))
    assert raw == (
        b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"
    )


def test_head_keeps_the_apps_content_length_and_sends_no_body(srv: Running) -> None:
    with connect(srv.port) as sock:
        sock.sendall(b"HEAD /head-cl HTTP/1.1\r\nHost: t\r\n\r\n" + get("/oneshot"))
        raw = read_until_closed(sock)
    head, following = parse_responses(raw, head_requests=1)
    assert head.raw_head == b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"
    assert following.body == BODY  # nothing of the HEAD body leaked into the stream


def test_204_drops_content_length_and_304_keeps_it_neither_has_a_body(srv: Running) -> None:
    raw = exchange(srv.port, b"GET /204 HTTP/1.1\r\n\r\n" + get("/304"))
    assert raw == (
        b'HTTP/1.1 204 No Content\r\netag: "e"\r\n\r\n'
        b'HTTP/1.1 304 Not Modified\r\netag: "e"\r\ncontent-length: 7\r\n'
        b"connection: close\r\n\r\n"
    )


def test_a_response_without_headers(srv: Running) -> None:
    raw = exchange(srv.port, b"GET /204-bare HTTP/1.1\r\n\r\n" + get("/204-bare"))
    assert (
        raw
        == b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    )


def test_status_outside_httpstatus_is_relayed_with_an_empty_reason(srv: Running) -> None:
    assert exchange(srv.port, get("/999")) == (
        b"HTTP/1.1 999 \r\ncontent-length: 3\r\nconnection: close\r\n\r\nodd"
    )
    assert exchange(srv.port, get("/599")).startswith(b"HTTP/1.1 599 \r\n")
    curl = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{LOOPBACK}:{srv.port}/999"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert curl.stdout == "999"
    assert httpx.get(f"http://{LOOPBACK}:{srv.port}/999").status_code == 999


def test_no_interim_response_without_expect(srv: Running) -> None:
    raw = exchange(
        srv.port, b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"100 Continue" not in raw


def test_a_body_disagreeing_with_content_length_closes_the_connection(srv: Running) -> None:
    with connect(srv.port) as sock:
        sock.sendall(b"GET /short-cl HTTP/1.1\r\n\r\nGET /oneshot HTTP/1.1\r\n\r\n")
        raw = read_until_closed(sock)
    assert raw == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345"  # truncated, then closed
    with connect(srv.port) as sock:
        sock.sendall(b"GET /long-cl HTTP/1.1\r\n\r\n")
        raw = read_until_closed(sock)
    assert raw == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n12"  # the excess never sent


def test_app_error_before_start_is_500_and_after_start_closes(srv: Running) -> None:
    resp = one(srv.port, get("/boom"))
    assert resp.status == 500
    assert resp.body == b"Internal Server Error\n"
    resp = one(srv.port, get("/no-response"))
    assert resp.status == 500
    resp = one(srv.port, get("/bad-header"))  # CR/LF in a value is an app error
    assert resp.status == 500
    assert b"injected" not in resp.raw_head
    with connect(srv.port) as sock:
        sock.sendall(b"GET /boom-late HTTP/1.1\r\n\r\n")
        raw = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\npartial\r\n")
    assert not raw.endswith(b"0\r\n\r\n")  # truncated: the client can tell


# -- requests -------------------------------------------------------------------------------


def test_scope(srv: Running) -> None:
    request = (
        b"GET /sc%6fpe?a=1&b=%20 HTTP/1.1\r\nHost: t\r\nX-Mixed-Case: Value\r\n"
        b"Connection: close\r\n\r\n"
    )
    with connect(srv.port) as sock:
        local = sock.getsockname()
        sock.sendall(request.replace(b"/sc%6fpe", b"/scope"))
        info = json.loads(parse_responses(read_until_closed(sock))[0].body)
    assert info["method"] == "GET"
    assert info["raw_path"] == "/scope"
    assert info["query_string"] == "a=1&b=%20"
    assert info["http_version"] == "1.1"
    assert info["scheme"] == "http"
    assert info["client"] == [local[0], local[1]]
    assert info["server"] == [LOOPBACK, srv.port]
    assert ["x-mixed-case", "Value"] in info["headers"]
    assert ["host", "t"] in info["headers"]
    # Absolute-form targets give the path; percent-escapes are decoded into `path` only.
    info = json.loads(one(srv.port, get("http://example.com/scope?x=%41")).body)
    assert (info["raw_path"], info["query_string"]) == ("/scope", "x=%41")


def test_pipelined_requests_are_answered_in_order(srv: Running, rec: Recorder) -> None:
    requests = (
        b"GET /oneshot HTTP/1.1\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nfirst"
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nsecond\r\n0\r\nX-T: 1\r\n\r\n"
        b"GET /999 HTTP/1.1\r\n\r\n"
        b"GET /stream HTTP/1.1\r\n\r\n"
        b"GET /cl HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    expected = [(200, BODY), (200, b"first"), (200, b"second"), (999, b"odd"),
                (200, b"onetwothree"), (200, b"hello")]  # fmt: skip
    # In one write, then split at every awkward place: byte by byte through the heads.
    for pieces in ([requests], [requests[i : i + 1] for i in range(len(requests))]):
        with connect(srv.port) as sock:
            for piece in pieces:
                sock.sendall(piece)
            responses = parse_responses(read_until_closed(sock))
        assert [(r.status, r.body) for r in responses] == expected


def test_pipelined_bytes_are_not_read_while_a_response_is_due(
    serve: Callable[..., Running], rec: Recorder
) -> None:
    srv = serve(rcvbuf=64 * 1024)
    request = b"GET /oneshot HTTP/1.1\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
    stream = request * 4096  # 4 MiB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.connect((LOOPBACK, srv.port))
    with sock:
        sock.sendall(b"GET /gate HTTP/1.1\r\n\r\n")
        wait_until(lambda: b"/gate" in rec.values("request"), 3.0, "the first request")
        sock.setblocking(False)
        sent = 0
        progress = time.monotonic()

        def stalled() -> bool:
            nonlocal sent, progress
            try:
                sent += sock.send(stream[sent : sent + 65536])
                progress = time.monotonic()
            except BlockingIOError:
                return time.monotonic() - progress > 0.5
            return sent == len(stream)

        wait_until(stalled, 15.0, "the client's sends to stall or finish")
        # The server stopped reading: it holds at most one read while /gate is due.
        assert sent < 2 * 1024 * 1024, sent
        rec.open("gate")
        sock.setblocking(True)
        sock.settimeout(10)
        whole = -(-sent // len(request)) * len(request)
        sock.sendall(stream[sent:whole] + get("/cl"))
        responses = parse_responses(read_until_closed(sock, timeout=10))
    assert [r.body for r in responses] == [b"released"] + [BODY] * (whole // len(request)) + [
        b"hello"
    ]


def test_keep_alive_by_default_and_connection_close(srv: Running) -> None:
    with connect(srv.port) as sock:
        for _ in range(3):
            sock.sendall(b"GET /oneshot HTTP/1.1\r\nHost: t\r\n\r\n")
            raw = recv_some(sock, BODY)
            assert raw.endswith(BODY)
            assert b"connection:" not in raw.lower()
        assert not closed_by_peer(sock)
        sock.sendall(b"GET /oneshot HTTP/1.1\r\nConnection: close\r\n\r\n")
        raw = read_until_closed(sock)  # returns only because the server closes
    assert b"connection: close\r\n" in raw


def test_http10_closes_unless_keep_alive_and_never_chunks(srv: Running) -> None:
    raw = exchange(srv.port, b"GET /oneshot HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in raw
    with connect(srv.port) as sock:
        sock.sendall(b"GET /oneshot HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        raw = recv_some(sock, BODY)
        assert b"connection: keep-alive\r\n" in raw
        assert not closed_by_peer(sock)
        sock.sendall(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        raw = read_until_closed(sock)
    # A streamed body to an HTTP/1.0 client is delimited by the close.
    assert raw == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nonetwothree"
    )
    assert one(srv.port, b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi").body == b"hi"


def test_expect_100_continue_is_answered_when_the_app_reads(srv: Running, rec: Recorder) -> None:
    with connect(srv.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        interim = recv_some(sock, b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        raw = read_until_closed(sock)
    assert parse_responses(raw)[0].body == b"data"
    # An app that answers without reading gets no 100, and the connection closes (the
    # client may or may not send the body now).
    with connect(srv.port) as sock:
        sock.sendall(
            b"PUT /no-read HTTP/1.1\r\nContent-Length: 9999\r\nExpect: 100-continue\r\n\r\n"
        )
        raw = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"connection: close\r\n" in raw


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"GET / HTTP/1.1\nHost: t\n\n",  # bare LF
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX : y\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_get_400_and_close(srv: Running, request_bytes: bytes) -> None:
    resp = one(srv.port, request_bytes)
    assert resp.status == 400
    assert resp.get(b"connection") == [b"close"]


def test_upgrade_requests_are_answered_plainly_and_the_connection_closed(srv: Running) -> None:
    with connect(srv.port) as sock:
        sock.sendall(
            b"GET /oneshot HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        )
        raw = read_until_closed(sock)
    (response,) = parse_responses(raw)
    assert (response.status, response.body) == (200, BODY)
    assert response.get(b"connection") == [b"close"]


def test_unsupported_http_version_gets_505(srv: Running) -> None:
    assert one(srv.port, b"GET / HTTP/2.0\r\n\r\n").status == 505


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_request_smuggling_shapes_get_400(
    srv: Running, rec: Recorder, request_bytes: bytes
) -> None:
    resp = one(srv.port, request_bytes)
    assert resp.status == 400
    assert b"/echo" not in rec.values("request")  # the app never saw it


@pytest.mark.parametrize(
    "coding", [b"gzip", b"gzip, chunked", b"identity", b"chunked, chunked", b"chunked;x"]
)
def test_transfer_codings_other_than_chunked_get_501(
    srv: Running, rec: Recorder, coding: bytes
) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: " + coding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    resp = one(srv.port, request)
    assert resp.status in (400, 501)  # llhttp refuses some itself
    assert b"/echo" not in rec.values("request")
    assert b"/echo" not in rec.values("request")  # the app never saw it


# -- limits ---------------------------------------------------------------------------------


def test_header_limit_431_as_soon_as_crossed(serve: Callable[..., Running]) -> None:
    srv = serve(max_header_bytes=4096)
    prefix = b"GET /oneshot HTTP/1.1\r\nX-Pad: "
    # Exactly at the limit (request line and the final CRLF included) is accepted.
    pad = b"p" * (4096 - len(prefix) - len(b"\r\nConnection: close\r\n\r\n"))
    exact = prefix + pad + b"\r\nConnection: close\r\n\r\n"
    assert len(exact) == 4096
    assert one(srv.port, exact).status == 200
    assert one(srv.port, exact[:-4] + b"x\r\n\r\n").status == 431
    # A head that never ends: 431 arrives once the limit is crossed, with nothing more
    # sent, and the connection is half-closed by the server.
    with connect(srv.port) as sock:
        sock.sendall(prefix + b"p" * 4100)
        raw = recv_some(sock, b"\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        raw += read_until_closed(sock)  # returns only because the server closes
        assert raw.endswith(b"\r\n\r\nRequest Header Fields Too Large\n")
    # Crossed one trickled byte at a time: refused on the byte that crosses it.
    with connect(srv.port) as sock:
        sock.sendall(prefix + b"p" * (4096 - len(prefix)))
        assert not recv_some(sock, b"HTTP", timeout=0.3)  # at the limit: still waiting
        sock.sendall(b"p")
        assert recv_some(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    # A huge header in one write.
    assert one(srv.port, prefix + b"p" * 200_000 + b"\r\n\r\n").status == 431


def test_pipelined_head_after_a_body_in_the_same_read_is_limited(
    serve: Callable[..., Running],
) -> None:
    srv = serve(max_header_bytes=1024)
    first = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    big = b"GET /oneshot HTTP/1.1\r\nX-Pad: " + b"p" * 2000 + b"\r\n\r\n"
    with connect(srv.port) as sock:
        sock.sendall(first + big)
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [200, 431]
    assert responses[0].body == b"ok"
    # The pipelined head begins in the same read but goes on in later ones.
    with connect(srv.port) as sock:
        sock.sendall(first + big[:600])
        assert parse_responses(recv_some(sock, b"ok"))[0].body == b"ok"
        sock.sendall(big[600:900])
        assert not recv_some(sock, b"HTTP", timeout=0.3)  # still under the limit
        # The part of the head in that first read is counted from its parsed parts, so
        # the limit may be passed by at most that read (600 bytes here) before a 431.
        sock.sendall(big[900 : 1024 + 600 + 1])
        assert recv_some(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")


def test_slowloris_gets_408_within_the_header_timeout(serve: Callable[..., Running]) -> None:
    srv = serve(header_timeout=0.6)
    with connect(srv.port) as sock:
        began = time.monotonic()
        sock.sendall(b"G")
        raw = b""
        sock.settimeout(0.05)
        deadline = began + 5.0
        for byte in b"ET / HTTP/1.1\r\nX-Slow: " + b"s" * 1000:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
                raw += sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if b"\r\n\r\n" in raw:
                break
        elapsed = time.monotonic() - began
    assert raw.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), raw
    # The bound: the timeout plus one sweep period (timeout / 4), plus slack for a busy box.
    assert 0.6 <= elapsed < 0.6 * 1.25 + 1.0, elapsed


def test_idle_keep_alive_connection_is_closed_silently(serve: Callable[..., Running]) -> None:
    srv = serve(keepalive_timeout=0.4)
    with connect(srv.port) as sock:
        sock.sendall(b"GET /oneshot HTTP/1.1\r\n\r\n")
        assert recv_some(sock, BODY).endswith(BODY)
        idle_from = time.monotonic()
        wait_until(lambda: closed_by_peer(sock), 3.0, "the idle connection to close")
        idle = time.monotonic() - idle_from
    assert 0.4 <= idle < 0.4 * 1.25 + 1.0, idle
    # A connection that never sends a byte is idle too.
    with connect(srv.port) as sock:
        wait_until(lambda: closed_by_peer(sock), 3.0, "the silent connection to close")


def test_body_read_timeout_closes_and_the_app_sees_disconnect(
    serve: Callable[..., Running], rec: Recorder
) -> None:
    srv = serve(body_timeout=0.4)
    with connect(srv.port) as sock:
        sock.sendall(b"POST /wait-disconnect HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        began = time.monotonic()
        wait_until(lambda: closed_by_peer(sock), 3.0, "the stalled upload to be closed")
        stalled = time.monotonic() - began
    assert 0.4 <= stalled < 0.4 * 1.25 + 1.0, stalled
    wait_until(lambda: "receive" in rec.kinds(), 3.0, "the app to see the disconnect")
    assert rec.values("body") == [b"abc"]  # read_all stopped at the disconnect
    assert rec.values("receive") == [{"type": "http.disconnect"}]


def test_connection_limit_answers_503_and_frees_with_closes(
    serve: Callable[..., Running],
) -> None:
    srv = serve(max_connections=3)
    held = [connect(srv.port) for _ in range(3)]
    try:
        for sock in held:  # each is being served (accepted and counted)
            sock.sendall(b"GET /oneshot HTTP/1.1\r\n\r\n")
            assert recv_some(sock, BODY).endswith(BODY)
        with connect(srv.port) as extra:
            raw = read_until_closed(extra)
        assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert srv.server.connections == 3
    finally:
        held.pop().close()
    wait_until(lambda: srv.server.connections == 2, 3.0, "the closed connection to count out")
    assert one(srv.port, get("/oneshot")).status == 200
    for sock in held:
        sock.close()


def test_write_backpressure_bounds_what_a_slow_reader_costs(
    serve: Callable[..., Running], rec: Recorder
) -> None:
    srv = serve(write_high_water=16 * 1024)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # no autotuning
    sock.connect((LOOPBACK, srv.port))
    with sock:
        sock.sendall(b"GET /flood HTTP/1.1\r\nConnection: close\r\n\r\n")
        # The app is held back once the kernel buffers are full: its progress stops
        # growing, far short of the 32 MiB it wants to send.
        last = [-1, time.monotonic()]

        def stalled() -> bool:
            if rec.sent != last[0]:
                last[:] = [rec.sent, time.monotonic()]
                return False
            return time.monotonic() - last[1] > 0.5

        wait_until(stalled, 10.0, "the app to be held back")
        assert 0 < rec.sent < 8 * 1024 * 1024, rec.sent
        raw = read_until_closed(sock, timeout=30)
    assert parse_responses(raw)[0].body == b"f" * (32 * 1024 * 1024)
    assert rec.values("flood-done") == [32 * 1024 * 1024]


def test_send_timeout_aborts_a_reader_that_stopped(
    serve: Callable[..., Running], rec: Recorder
) -> None:
    srv = serve(write_high_water=16 * 1024, send_timeout=0.5)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect((LOOPBACK, srv.port))
    with sock:
        sock.sendall(b"GET /flood HTTP/1.1\r\n\r\n")
        # The app's sends become no-ops once the connection is aborted, so it finishes.
        wait_until(lambda: "flood-done" in rec.kinds(), 10.0, "the app to finish")
        wait_until(lambda: srv.server.connections == 0, 5.0, "the connection to be dropped")


# -- disconnects ----------------------------------------------------------------------------


def test_disconnect_is_delivered_to_receive_and_sends_become_no_ops(
    srv: Running, rec: Recorder
) -> None:
    with connect(srv.port) as sock:
        sock.sendall(b"POST /wait-disconnect HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        wait_until(lambda: "body" in rec.kinds(), 3.0, "the app to read the body")
    wait_until(lambda: "receive" in rec.kinds(), 3.0, "the app to see the disconnect")
    assert rec.values("receive") == [{"type": "http.disconnect"}]
    # /wait-disconnect returns without a response; nothing is logged as an app failure and
    # the server keeps serving.
    assert one(srv.port, get("/oneshot")).status == 200


def test_disconnect_extension_and_cancel_on_disconnect(
    serve: Callable[..., Running], rec: Recorder
) -> None:
    srv = serve(drain_timeout=0.2)  # its app call outlives the client, by design
    with connect(srv.port) as sock:
        sock.sendall(b"GET /watch-disconnect HTTP/1.1\r\n\r\n")
        wait_until(lambda: b"/watch-disconnect" in rec.values("request"), 3.0, "the request")
    wait_until(lambda: "extension" in rec.kinds(), 3.0, "the extension to fire")
    assert "cancelled" not in rec.kinds()  # not cancelled unless asked
    srv = serve(cancel_on_disconnect=True)
    with connect(srv.port) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\n\r\n")
        wait_until(lambda: b"/hang" in rec.values("request"), 3.0, "the request")
    wait_until(lambda: srv.server.connections == 0, 3.0, "the connection to go")
    wait_until(lambda: not srv.server.tasks, 3.0, "the app call to be cancelled")


# -- shutdown -------------------------------------------------------------------------------


def test_graceful_shutdown_finishes_in_flight_and_closes_idle(
    serve: Callable[..., Running], rec: Recorder
) -> None:
    srv = serve(drain_timeout=10.0)
    idle = connect(srv.port)
    idle.sendall(b"GET /oneshot HTTP/1.1\r\n\r\n")
    assert recv_some(idle, BODY).endswith(BODY)
    busy = connect(srv.port)
    busy.sendall(b"GET /gate HTTP/1.1\r\n\r\n")
    wait_until(lambda: b"/gate" in rec.values("request"), 3.0, "the in-flight request")
    srv.server.should_exit = True
    wait_until(lambda: closed_by_peer(idle), 3.0, "the idle connection to close")
    wait_until(lambda: not port_open(srv.port), 3.0, "the listener to stop accepting")
    assert not srv.finished.is_set()  # still draining the in-flight request
    rec.open("gate")
    raw = read_until_closed(busy)
    response = parse_responses(raw)[0]
    assert (response.status, response.body) == (200, b"released")
    assert response.get(b"connection") == [b"close"]
    wait_until(srv.finished.is_set, 5.0, "serve() to return")
    idle.close()
    busy.close()


def test_shutdown_drain_is_bounded(serve: Callable[..., Running], rec: Recorder) -> None:
    srv = serve(drain_timeout=0.5)
    with connect(srv.port) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\n\r\n")
        wait_until(lambda: b"/hang" in rec.values("request"), 3.0, "the in-flight request")
        began = time.monotonic()
        srv.server.should_exit = True
        wait_until(srv.finished.is_set, 5.0, "serve() to return")
        assert time.monotonic() - began < 0.5 + 1.5
        assert read_until_closed(sock) == b""  # aborted, never answered


# -- real clients ---------------------------------------------------------------------------


NODE_SCRIPT = r"""
const base = process.argv[1];
(async () => {
  const out = {};
  for (const [path, method] of JSON.parse(process.argv[2])) {
    try {
      const r = await fetch(base + path, {method});
      const body = await r.text();
      out[method + " " + path] = {status: r.status, body, length: r.headers.get("content-length"),
                                  te: r.headers.get("transfer-encoding")};
    } catch (e) {
      out[method + " " + path] = {error: String(e.cause || e)};
    }
  }
  console.log(JSON.stringify(out));
  process.exit(0);  // without waiting for idle keep-alive sockets
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_fetch_accepts_every_framing(srv: Running) -> None:
    cases = [["/cl", "GET"], ["/oneshot", "GET"], ["/stream", "GET"], ["/hop", "GET"],
             ["/head-cl", "HEAD"], ["/304", "GET"], ["/204", "GET"]]  # fmt: skip
    out = subprocess.run(
        ["node", "-e", NODE_SCRIPT, f"http://{LOOPBACK}:{srv.port}", json.dumps(cases)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    got = json.loads(out)
    assert got["GET /cl"] == {"status": 200, "body": "hello", "length": "5", "te": None}
    assert got["GET /oneshot"] == {"status": 200, "body": "v" * 100, "length": "100", "te": None}
    assert got["GET /stream"] == {"status": 200, "body": "onetwothree", "length": None,
                                  "te": "chunked"}  # fmt: skip
    assert got["GET /hop"]["body"] == "abc"
    assert got["HEAD /head-cl"] == {"status": 200, "body": "", "length": "1234", "te": None}
    assert got["GET /304"]["status"] == 304
    assert got["GET /204"]["status"] == 204


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_and_httpx(srv: Running) -> None:
    base = f"http://{LOOPBACK}:{srv.port}"
    for path, expected in (("/cl", b"hello"), ("/oneshot", BODY), ("/stream", b"onetwothree")):
        done = subprocess.run(["curl", "-sf", "--http1.1", base + path],
                              capture_output=True, timeout=10, check=True)  # fmt: skip
        assert done.stdout == expected
    upload = subprocess.run(
        ["curl", "-sf", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", base + "/echo"],
        input=b"x" * 300_000, capture_output=True, timeout=10, check=True,
    )  # fmt: skip
    assert upload.stdout == b"x" * 300_000
    with httpx.Client(base_url=base) as client:  # one keep-alive connection
        assert client.get("/stream").content == b"onetwothree"
        assert client.post("/echo", content=b"y" * 200_000).content == b"y" * 200_000

        def chunks() -> Iterator[bytes]:
            yield b"a" * 5000
            yield b"b" * 5000

        assert client.post("/echo", content=chunks()).content == b"a" * 5000 + b"b" * 5000
        assert client.head("/head-cl").headers["content-length"] == "1234"


# -- memory bounds (the server in its own process) -----------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def server_process() -> Iterator[Callable[..., tuple[int, int]]]:
    started: list[subprocess.Popen[bytes]] = []

    def run(**options: Any) -> tuple[int, int]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.proxy.test_httpserver", "serve", str(port),
             json.dumps(options)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(proc)
        wait_until(lambda: port_open(port), 15.0, "the server process")
        return proc.pid, port

    yield run
    for proc in started:
        proc.kill()
        proc.wait(10)


async def _flood_heads(port: int, conns: int, size: int) -> list[bytes]:
    async def one_client() -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nX-Big: ")
            chunk = b"h" * 65536
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass
        try:
            return await asyncio.wait_for(reader.read(200), 10)
        except (ConnectionResetError, BrokenPipeError):
            return b"reset"
        finally:
            writer.close()

    return await asyncio.gather(*(one_client() for _ in range(conns)))


async def _trickle(port: int, conns: int, seconds: float) -> list[bytes]:
    async def one_client() -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET / HTTP/1.1\r\nX-Slow: ")
        ends = time.monotonic() + seconds
        answer = asyncio.ensure_future(reader.read(200))
        try:
            while time.monotonic() < ends and not answer.done():
                writer.write(b"s")
                await asyncio.wait([answer], timeout=1.0)  # one byte a second
            return await asyncio.wait_for(answer, 5)
        except (ConnectionResetError, BrokenPipeError):
            return b"reset"
        finally:
            writer.close()

    return await asyncio.gather(*(one_client() for _ in range(conns)))


def _peak_rss_while(pid: int, work: Callable[[], list[bytes]]) -> tuple[int, list[bytes]]:
    peak = [rss_kib(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answers = work()
    finally:
        done.set()
        sampler.join()
    return peak[0], answers


def _warm(port: int) -> None:
    for _ in range(50):
        assert exchange(port, get("/oneshot")).endswith(BODY)


def test_rss_bounded_under_200_connections_of_1_mib_heads(
    server_process: Callable[..., tuple[int, int]],
) -> None:
    pid, port = server_process()
    _warm(port)
    before = rss_kib(pid)
    peak, answers = _peak_rss_while(pid, lambda: asyncio.run(_flood_heads(port, 200, 1 << 20)))
    refused = sum(a.startswith(b"HTTP/1.1 431 ") for a in answers)
    assert refused >= 190, answers[:5]  # a few may see the reset before the answer
    print(f"RSS {before} KiB before, {peak} KiB at peak")
    assert (peak - before) < 20 * 1024, f"RSS grew {peak - before} KiB"


def test_rss_bounded_under_200_trickling_connections(
    server_process: Callable[..., tuple[int, int]],
) -> None:
    pid, port = server_process(header_timeout=3.0)
    _warm(port)
    before = rss_kib(pid)
    peak, answers = _peak_rss_while(pid, lambda: asyncio.run(_trickle(port, 200, 8.0)))
    assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) == 200, answers[:5]
    print(f"RSS {before} KiB before, {peak} KiB at peak")
    assert (peak - before) < 20 * 1024, f"RSS grew {peak - before} KiB"


def _serve_main(port: int, options: dict[str, Any]) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(1024)
    uvloop.run(Server(make_app(Recorder()), **options).serve(sock))


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve_main(int(sys.argv[2]), json.loads(sys.argv[3]))
