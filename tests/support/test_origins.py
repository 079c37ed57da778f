"""The test origins themselves, without the proxy: what each kind puts on the wire, read
as raw bytes from a socket, and the config protocol they share."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import pytest

from tests.support.origin import Reply, Request, decide, title_case
from tests.support.origins import ALL_KINDS, ORIGIN_KINDS, Origin, start_origin
from tests.support.servers import LOOPBACK, ProcessGroup

TIMEOUT = 5.0
IMF_DATE = rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Origin]]:
    """One origin of every kind for the whole module."""
    group = ProcessGroup(tmp_path_factory.mktemp("origins"))
    try:
        yield {kind: start_origin(group, kind) for kind in ALL_KINDS}
    finally:
        group.cleanup()


@pytest.fixture
def name() -> str:
    return f"o{uuid.uuid4().hex[:12]}"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    framed_body: bytes
    head: bytes

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def body(self) -> bytes:
        if (self.get("transfer-encoding") or "").lower() != "chunked":
            return self.framed_body
        return dechunk(self.framed_body)


def dechunk(framed: bytes) -> bytes:
    out, rest = b"", framed
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", rest
            return out
        out += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


def read_response(stream: BinaryIO, method: str = "GET") -> Response:
    """One response (an interim 1xx is one too), leaving the stream at the next."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, f"connection closed inside a response head: {head!r}"
        head += line
    lines = head[:-4].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    response = Response(status, headers, b"", head)
    if method == "HEAD" or status < 200 or status in (204, 304):
        return response
    if (response.get("transfer-encoding") or "").lower() == "chunked":
        framed = b""
        while True:
            size_line = stream.readline()
            framed += size_line
            size = int(size_line.split(b";")[0], 16)
            framed += stream.read(size + 2)
            if size == 0:
                break
        response.framed_body = framed
    elif (length := response.get("content-length")) is not None:
        response.framed_body = stream.read(int(length))
    else:
        response.framed_body = stream.read()
    return response


def request_bytes(method: str, target: str, *lines: str, body: bytes = b"") -> bytes:
    head = "\r\n".join([f"{method} {target} HTTP/1.1", f"Host: {LOOPBACK}", *lines])
    return head.encode("latin-1") + b"\r\n\r\n" + body


def connect(origin: Origin) -> socket.socket:
    return socket.create_connection((LOOPBACK, origin.port), timeout=TIMEOUT)


def exchange(origin: Origin, method: str, target: str, *lines: str) -> Response:
    with connect(origin) as sock, sock.makefile("rb") as stream:
        sock.sendall(request_bytes(method, target, *lines, "Connection: close"))
        return read_response(stream, method)


def everything_until_close(origin: Origin, payload: bytes) -> bytes:
    """All bytes the origin sends for `payload` until it closes; a timeout fails."""
    chunks: list[bytes] = []
    with connect(origin) as sock:
        sock.sendall(payload)
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def without_date(reply: bytes) -> bytes:
    """`reply` with its one Date value replaced by DATE, after checking its format."""
    dates = re.findall(rb"\r\nDate: ([^\r]*)\r\n", reply)
    assert len(dates) == 1, reply
    assert re.fullmatch(IMF_DATE, dates[0]), dates[0]
    return reply.replace(dates[0], b"DATE")


# -- names and framing on the wire --------------------------------------------------------


@pytest.mark.parametrize("kind", ORIGIN_KINDS)
def test_names_on_the_wire_are_title_case(started: dict[str, Origin], name: str, kind: str) -> None:
    origin = started[kind]
    origin.configure(
        name,
        headers=[["cache-control", "max-age=60"], ["x-custom-thing", "1"], ["vary", "accept"]],
        etag='"v1"',
        last_modified="Tue, 01 Sep 2026 10:00:00 GMT",
    )
    response = exchange(origin, "GET", f"/{name}")
    names = response.names()
    assert response.status == 200
    for expected in ("Server", "Date", "Cache-Control", "X-Custom-Thing", "Vary", "ETag",
                     "Last-Modified", "Content-Length"):  # fmt: skip
        assert expected in names, response.head
    assert [n for n in names if n == n.lower()] == [], response.head
    assert response.get("cache-control") == "max-age=60"
    assert response.body() == f"body of {name}".encode()


def test_uvicorn_names_on_the_wire_are_lowercase(started: dict[str, Origin], name: str) -> None:
    origin = started["uvicorn"]
    origin.configure(name, headers=[["cache-control", "max-age=60"]], etag='"v1"')
    response = exchange(origin, "GET", f"/{name}")
    assert {"cache-control", "etag", "content-length", "date", "server"} <= set(response.names())
    assert [n for n in response.names() if n != n.lower()] == []


@pytest.mark.parametrize("kind", ORIGIN_KINDS)
def test_chunked_config_gives_chunked_framing(
    started: dict[str, Origin], name: str, kind: str
) -> None:
    origin = started[kind]
    origin.configure(name, body="abcdefghi", chunked=True)
    response = exchange(origin, "GET", f"/{name}")
    assert "Transfer-Encoding: chunked\r\n" in response.head.decode()
    assert response.get("content-length") is None
    assert response.body() == b"abcdefghi"
    if kind != "nginx":  # nginx re-chunks what arrives: its boundaries are its own
        assert response.framed_body == b"3\r\nabc\r\n3\r\ndef\r\n3\r\nghi\r\n0\r\n\r\n"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_keep_alive_head_conditional_and_chunked_request(
    started: dict[str, Origin], name: str, kind: str
) -> None:
    """Several exchanges on one connection: every reply is framed exactly, so each
    starts where the last ended."""
    origin = started[kind]
    origin.configure(name, etag='"e1"', headers=[["cache-control", "max-age=60"]])
    body = f"body of {name}".encode()
    exchanges = [
        ("GET", request_bytes("GET", f"/{name}")),
        ("HEAD", request_bytes("HEAD", f"/{name}")),
        ("GET", request_bytes("GET", f"/{name}", 'If-None-Match: "e1"')),
        (
            "POST",
            request_bytes(
                "POST",
                f"/{name}",
                "Transfer-Encoding: chunked",
                body=b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
            ),
        ),
        ("GET", request_bytes("GET", f"/{name}", "Connection: close")),
    ]
    with connect(origin) as sock, sock.makefile("rb") as stream:
        replies = []
        for method, payload in exchanges:
            sock.sendall(payload)
            replies.append(read_response(stream, method))
        assert stream.read() == b""
    assert [r.status for r in replies] == [200, 200, 304, 200, 200]
    assert replies[0].body() == replies[3].body() == replies[4].body() == body
    assert replies[1].get("content-length") == str(len(body))
    assert replies[2].get("etag") == '"e1"'
    assert origin.stats(name)["requests"][3]["body_length"] == 7


# -- the config protocol ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_config_and_stats_round_trip(started: dict[str, Origin], name: str, kind: str) -> None:
    origin = started[kind]
    origin.configure(name, status=201, body="made", methods={"PUT": {"status": 202}})
    first = exchange(origin, "GET", f"/{name}/sub?q=1", "X-Mixed-Case: v")
    assert (first.status, first.body()) == (201, b"made")
    with connect(origin) as sock, sock.makefile("rb") as stream:
        sock.sendall(request_bytes("PUT", f"/{name}", "Content-Length: 5", body=b"hello"))
        assert read_response(stream).status == 202
    stats = origin.stats(name)
    assert stats["counts"] == {"GET": 1, "PUT": 1, "total": 2}
    assert origin.count(name, "PUT") == 1
    get, put = stats["requests"]
    assert (get["method"], get["target"], get["body_length"]) == ("GET", f"/{name}/sub?q=1", 0)
    # Names are recorded as they arrived: only uvicorn lowercases them on the way in.
    mixed = "x-mixed-case" if kind == "uvicorn" else "X-Mixed-Case"
    assert [mixed, "v"] in get["headers"]
    assert (put["method"], put["body_length"]) == ("PUT", 5)
    assert origin.last_request(name) == put


@pytest.mark.parametrize("kind", ["uvicorn", "titlecase", "nginx"])
def test_raw_only_fields_are_refused_elsewhere(
    started: dict[str, Origin], name: str, kind: str
) -> None:
    for field in ("raw", "no_length", "close", "informational"):
        with pytest.raises(RuntimeError, match=field):
            started[kind].configure(name, **{field: 1})


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_unknown_fields_are_refused(started: dict[str, Origin], name: str, kind: str) -> None:
    with pytest.raises(RuntimeError, match="colour"):
        started[kind].configure(name, colour="red")
    with pytest.raises(RuntimeError, match="methods"):
        started[kind].configure(name, methods={"POST": {"methods": {}}})


def test_decide_follows_the_config() -> None:
    def get(config: Mapping[str, Any], *headers: tuple[str, str], method: str = "GET") -> Reply:
        return decide("n", config, Request(method, "/n", list(headers)), 3)

    assert get({}).body == b"body of n"
    assert get({"size": 4}).body == b"xxxx"
    assert get({"echo": "x-a"}, ("X-A", "1")).body == b"body of n 1"
    assert get({"echo": "x-a"}).body == b"body of n -"
    assert get({"counter_body": True}).body == b"body of n #3"
    overridden = get({"status": 200, "methods": {"POST": {"status": 500}}}, method="POST")
    assert overridden.status == 500
    tagged = {"etag": '"v"', "last_modified": "Tue, 01 Sep 2026 10:00:00 GMT"}
    assert get(tagged, ("If-None-Match", 'W/"v"')).status == 304
    assert get(tagged, ("if-modified-since", "Tue, 01 Sep 2026 10:00:00 GMT")).status == 304
    assert get(tagged, ("If-Modified-Since", "Wed, 02 Sep 2026 10:00:00 GMT")).status == 200
    assert get(tagged, ("If-None-Match", '"v"'), method="POST").status == 200
    head = get({"chunked": True}, method="HEAD")
    assert (head.wire_body(), head.framing()) == (b"", [("Transfer-Encoding", "chunked")])
    assert get({"raw": "\xff"}).raw == b"\xff"
    assert [title_case(n) for n in ("cache-control", "etag", "ETag", "x-A")] == [
        "Cache-Control", "Etag", "ETag", "x-A"
    ]  # fmt: skip


# -- the raw origin's edge replies ----------------------------------------------------------


def raw_head(status: str, *lines: str) -> bytes:
    fields = "".join(f"{line}\r\n" for line in ["Server: raw-origin", "Date: DATE", *lines])
    return f"HTTP/1.1 {status}\r\n{fields}\r\n".encode()


def test_raw_reply_is_sent_verbatim_and_keeps_the_connection(
    started: dict[str, Origin], name: str
) -> None:
    origin = started["raw"]
    verbatim = "HTTP/1.1 200 Fine\r\nx-lower:  spaced \r\nContent-Length: 2\r\n\r\nhi"
    origin.configure(name, raw=verbatim)
    payload = request_bytes("GET", f"/{name}")
    with connect(origin) as sock:
        for _ in range(2):
            sock.sendall(payload)
            received = b""
            while len(received) < len(verbatim):
                data = sock.recv(65536)
                assert data, received
                received += data
            assert received == verbatim.encode()
    assert origin.count(name) == 2


def test_raw_reply_with_close(started: dict[str, Origin], name: str) -> None:
    origin = started["raw"]
    garbage = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort\xe9"
    origin.configure(name, raw=garbage, close=True)
    reply = everything_until_close(origin, request_bytes("GET", f"/{name}"))
    assert reply == garbage.encode("latin-1")


def test_no_length_body_ends_at_close(started: dict[str, Origin], name: str) -> None:
    origin = started["raw"]
    origin.configure(name, body="abc", no_length=True, headers=[["cache-control", "max-age=5"]])
    reply = everything_until_close(origin, request_bytes("GET", f"/{name}"))
    assert without_date(reply) == raw_head("200 OK", "Cache-Control: max-age=5") + b"abc"


def test_close_sends_connection_close_and_closes(started: dict[str, Origin], name: str) -> None:
    origin = started["raw"]
    origin.configure(name, body="abc", close=True)
    # The request asks for keep-alive: the close is the origin's own.
    reply = everything_until_close(origin, request_bytes("GET", f"/{name}"))
    expected = raw_head("200 OK", "Content-Length: 3", "Connection: close") + b"abc"
    assert without_date(reply) == expected


def test_informational_replies_come_first(started: dict[str, Origin], name: str) -> None:
    origin = started["raw"]
    origin.configure(name, body="abc", informational=[100, 103], close=True)
    reply = everything_until_close(origin, request_bytes("GET", f"/{name}"))
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n"
    expected = raw_head("200 OK", "Content-Length: 3", "Connection: close") + b"abc"
    assert without_date(reply) == interim + expected


def test_unknown_status_is_sent_as_is(started: dict[str, Origin], name: str) -> None:
    origin = started["raw"]
    origin.configure(name, status=999, body="odd", close=True)
    reply = everything_until_close(origin, request_bytes("GET", f"/{name}"))
    expected = raw_head("999 ", "Content-Length: 3", "Connection: close") + b"odd"
    assert without_date(reply) == expected


def test_raw_origin_answers_a_malformed_request_with_400(started: dict[str, Origin]) -> None:
    reply = everything_until_close(started["raw"], b"NONSENSE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in reply
