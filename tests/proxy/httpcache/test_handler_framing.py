"""Message framing as the client sees it on the wire (RFC 9112 §6, RFC 9110 §7.6.1), in
front of the raw origin, which can send what well-behaved servers never do: both
framings at once, no Date, a body delimited by the connection's close, interim 1xx
answers, unregistered statuses and control bytes in a value.

Every response is read from a raw socket (the request says `Connection: close`, so the
proxy's whole answer is everything up to the close) and parsed here, byte by byte: one
framing (Content-Length or chunked, never both, never two lengths) that delimits exactly
the bytes sent, and none of the hop-by-hop fields, nor those the origin's Connection
line nominated, in whatever case the origin wrote them.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proxy.httpcache.conftest import Stack, raw_request

MAX_AGE = [["cache-control", "max-age=60"]]
RESULTS = ("HIT", "MISS", "STALE", "REVALIDATED", "PASS")

# RFC 9110 §7.6.1 (and the legacy fields a proxy must not forward). Connection and
# Transfer-Encoding are checked on their own: the proxy's server writes its own.
HOP_BY_HOP = frozenset({"keep-alive", "proxy-connection", "te", "trailer", "upgrade"})
SERVER_CONNECTION_TOKENS = frozenset({"close", "keep-alive"})

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([0-9]{3}) [\t !-~\x80-\xff]*")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t -~\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)(;[^\r\n]*)?")


@dataclass
class Message:
    """One response as parsed from the wire: names in their wire case."""

    status: int
    fields: list[tuple[str, str]]
    body: bytes
    interim: list[int]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k.lower() == name]

    def value(self, name: str) -> str | None:
        found = self.values(name)
        assert len(found) <= 1, f"{name} repeated: {found}"
        return found[0] if found else None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.fields}


def _head(data: bytes, pos: int) -> tuple[int, list[tuple[str, str]], int]:
    end = data.find(b"\r\n\r\n", pos)
    assert end >= 0, f"no complete head in {data[pos : pos + 300]!r}"
    status_line, *lines = data[pos:end].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    assert match, f"bad status line {status_line!r}"
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon, f"no colon in {line!r}"
        assert _TOKEN.fullmatch(name), f"bad field name in {line!r}"
        value = value.strip(b" \t")
        assert _FIELD_VALUE.fullmatch(value), f"control byte in {line!r}"
        fields.append((name.decode("latin-1"), value.decode("latin-1")))
    return int(match[1]), fields, end + 4


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    parts = []
    while True:
        eol = data.find(b"\r\n", pos)
        assert eol >= 0, f"truncated chunked body at {data[pos : pos + 100]!r}"
        size_line = _CHUNK_SIZE.fullmatch(data[pos:eol])
        assert size_line, f"bad chunk size line {data[pos:eol]!r}"
        size, pos = int(size_line[1], 16), eol + 2
        if size == 0:
            break
        assert len(data) >= pos + size + 2, "truncated chunk"
        parts.append(data[pos : pos + size])
        assert data[pos + size : pos + size + 2] == b"\r\n", "chunk not followed by CRLF"
        pos += size + 2
    # No trailer section is expected: the terminating empty line follows at once.
    assert data[pos : pos + 2] == b"\r\n", f"bad chunked end {data[pos : pos + 50]!r}"
    return b"".join(parts), pos + 2


def parse(data: bytes, head: bool = False) -> Message:
    """The final response in ``data`` (everything one `Connection: close` exchange
    returned), checking its framing: interim 1xx heads first, then one framing that
    delimits exactly the rest of the bytes."""
    interim: list[int] = []
    pos = 0
    while True:
        status, fields, pos = _head(data, pos)
        if 100 <= status < 200 and status != 101:
            interim.append(status)
            framing = {k.lower() for k, _ in fields} & {"content-length", "transfer-encoding"}
            assert not framing, f"framing on a {status}: {fields}"
            continue
        break
    message = Message(status, fields, b"", interim)
    lengths = message.values("content-length")
    codings = message.values("transfer-encoding")
    assert not (lengths and codings), f"both framings: {fields}"
    assert len(lengths) <= 1, f"several Content-Length lines: {lengths}"
    if status in (204, 304) or head:
        assert not codings, f"Transfer-Encoding on a bodiless {status}"
        assert data[pos:] == b"", f"bytes after a bodiless {status}: {data[pos : pos + 100]!r}"
        return message
    assert len(lengths) + len(codings) == 1, f"no framing on a {status}: {fields}"
    if codings:
        assert codings == ["chunked"], codings
        message.body, pos = _dechunk(data, pos)
    else:
        assert lengths[0].isdigit(), lengths
        size = int(lengths[0])
        message.body, pos = data[pos : pos + size], pos + size
        assert len(message.body) == size, f"{len(message.body)} of {size} body bytes"
    assert data[pos:] == b"", f"bytes past the framed body: {data[pos : pos + 100]!r}"
    return message


def check(message: Message, nominated: frozenset[str] = frozenset()) -> Message:
    """The end-to-end invariants: no hop-by-hop field (the proxy's server may write its
    own Connection: close/keep-alive), none the origin's Connection line nominated, one
    Date at most, and exactly one below 500 (RFC 9110 §6.6.1 lets a 5xx go without)."""
    names = message.names()
    assert not names & HOP_BY_HOP, f"hop-by-hop fields relayed: {message.fields}"
    assert not names & nominated, f"fields the origin's Connection named: {message.fields}"
    for value in message.values("connection"):
        listed = {t.strip().lower() for t in value.split(",") if t.strip()}
        assert listed <= SERVER_CONNECTION_TOKENS, f"Connection: {value}"
    dates = message.values("date")
    assert len(dates) <= 1, f"several Date lines: {dates}"
    if message.status < 500:
        assert dates, f"no Date on a {message.status}: {message.fields}"
        assert parsedate_to_datetime(dates[0]) is not None
    return message


def get(stack: Stack, path: str, *lines: str, method: str = "GET") -> Message:
    """A request on its own connection, its answer parsed and checked."""
    head = "\r\n".join([f"{method} {path} HTTP/1.1", "Host: a", *lines, "Connection: close"])
    data = raw_request(stack.proxy.url, head.encode("latin-1") + b"\r\n\r\n")
    return check(parse(data, head=method == "HEAD"))


def raw_reply(status: str, lines: list[str], body: bytes, chunked: bool = False) -> str:
    """A complete origin reply for the `raw` config field (latin-1 text): ``lines`` as
    given, then the body, framed by a Content-Length line (or chunked) appended here."""
    if chunked:
        third = max(len(body) // 3, 1)
        parts = [body[i : i + third] for i in range(0, len(body), third)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        lines = [*lines, "Transfer-Encoding: chunked"]
    else:
        framed = body
        lines = [*lines, f"Content-Length: {len(body)}"]
    head = "".join(f"{line}\r\n" for line in [f"HTTP/1.1 {status}", *lines])
    return head + "\r\n" + framed.decode("latin-1")


def test_chunked_replies_are_relayed_then_served_with_valid_framing(
    raw_stack: Stack, name: str
) -> None:
    body = b"0123456789" * 5  # three chunks from the origin
    for suffix, policy, second in (("c", "max-age=60", "HIT"), ("u", "no-store", "PASS")):
        path = f"/{name}{suffix}"
        raw_stack.origin.configure(
            f"{name}{suffix}", headers=[["cache-control", policy]], size=len(body), chunked=True
        )
        expected = b"x" * len(body)
        for result in ("MISS", second):
            answer = get(raw_stack, path)
            assert (answer.status, answer.value("x-cache"), answer.body) == (200, result, expected)
        assert raw_stack.origin.count(f"{name}{suffix}") == (1 if second == "HIT" else 2)


def test_the_hit_of_a_chunked_reply_has_one_content_length(raw_stack: Stack, name: str) -> None:
    raw_stack.origin.configure(name, headers=MAX_AGE, body="chunked body", chunked=True)
    get(raw_stack, f"/{name}")
    hit = get(raw_stack, f"/{name}")
    assert (hit.value("x-cache"), hit.body) == ("HIT", b"chunked body")
    assert hit.values("content-length") == [str(len(b"chunked body"))]
    assert hit.values("transfer-encoding") == []
    head = get(raw_stack, f"/{name}", method="HEAD")
    assert (head.status, head.value("x-cache"), head.body) == (200, "HIT", b"")
    assert head.values("content-length") == [str(len(b"chunked body"))]


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked", "Content-Length: 5"],
        ["Content-Length: 999", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked", "Content-Length: 0"],
    ],
    ids=["CL.TE", "TE.CL", "CL-too-long.TE", "TE.CL-zero"],
)
def test_an_origin_reply_with_both_framings_is_not_relayed_with_both(
    raw_stack: Stack, name: str, framing: list[str]
) -> None:
    raw = "".join(
        f"{line}\r\n" for line in ["HTTP/1.1 200 OK", "Cache-Control: max-age=60", *framing]
    )
    raw_stack.origin.configure(name, raw=raw + "\r\n5\r\nhello\r\n0\r\n\r\n")
    for _ in range(2):
        answer = get(raw_stack, f"/{name}")
        # Either a valid message (the chunked body, RFC 9112 §6.3 rule 3) or a 502.
        assert answer.status in (200, 502), answer
        if answer.status == 200:
            assert answer.body == b"hello"


@pytest.mark.parametrize(
    "lengths",
    [["Content-Length: 5", "Content-Length: 5"], ["Content-Length: 5, 5"]],
    ids=["two-lines", "list"],
)
def test_a_repeated_identical_content_length_is_relayed_once(
    raw_stack: Stack, name: str, lengths: list[str]
) -> None:
    raw = "".join(
        f"{line}\r\n" for line in ["HTTP/1.1 200 OK", "Cache-Control: max-age=60", *lengths]
    )
    raw_stack.origin.configure(name, raw=raw + "\r\nhello")
    for result in ("MISS", "HIT"):
        answer = get(raw_stack, f"/{name}")
        assert (answer.status, answer.value("x-cache"), answer.body) == (200, result, b"hello")
        assert answer.values("content-length") in ([], ["5"])


def test_a_reply_without_date_gets_one(raw_stack: Stack, name: str) -> None:
    """RFC 9110 §6.6.1: a recipient that forwards or caches a response without Date
    adds one with the time it was received; the HIT carries the stored one."""
    for suffix, policy in (("c", "max-age=60"), ("u", "no-store")):
        path = f"/{name}{suffix}"
        raw_stack.origin.configure(
            f"{name}{suffix}",
            raw=raw_reply("200 OK", ["Server: raw", f"Cache-Control: {policy}"], b"dateless"),
        )
        before = time.time()
        first = get(raw_stack, path)
        second = get(raw_stack, path)
        for answer in (first, second):
            assert answer.body == b"dateless"
            date = parsedate_to_datetime(answer.values("date")[0]).timestamp()
            assert before - 2 <= date <= time.time() + 1
        if policy == "max-age=60":
            assert second.value("x-cache") == "HIT"
            assert second.value("date") == first.value("date")


def test_a_reply_delimited_by_close_is_relayed_whole(raw_stack: Stack, name: str) -> None:
    body = "y" * 20_000
    for suffix, policy in (("c", "max-age=60"), ("u", "no-store")):
        raw_stack.origin.configure(
            f"{name}{suffix}", headers=[["cache-control", policy]], body=body, no_length=True
        )
        for _ in range(2):
            answer = get(raw_stack, f"/{name}{suffix}")
            assert (answer.status, answer.body) == (200, body.encode())
    assert get(raw_stack, f"/{name}c").value("x-cache") == "HIT"
    assert raw_stack.origin.count(f"{name}c") == 1


@pytest.mark.parametrize(
    "framing",
    ["Content-Length: 100\r\n\r\nonly part", "Transfer-Encoding: chunked\r\n\r\n20\r\nonly part"],
    ids=["content-length", "chunked"],
)
def test_a_reply_cut_short_never_looks_complete_and_is_not_stored(
    raw_stack: Stack, name: str, framing: str
) -> None:
    """The origin closes inside the body: the client gets a 502, or a response whose
    framing visibly ends early (RFC 9112 §8), and nothing is stored (RFC 9111 §3.3)."""
    raw = f"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n{framing}"
    raw_stack.origin.configure(name, raw=raw, close=True)
    for count in (1, 2):
        request = f"GET /{name} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        data = raw_request(raw_stack.proxy.url, request.encode())
        if not data.startswith(b"HTTP/1.1 502 "):
            with pytest.raises(AssertionError, match=r"truncated|body bytes|no complete head"):
                parse(data)
        assert raw_stack.origin.count(name) == count


def test_interim_responses_leave_a_valid_final_one(raw_stack: Stack, name: str) -> None:
    raw_stack.origin.configure(name, headers=MAX_AGE, informational=[103, 100, 103])
    for result in ("MISS", "HIT"):
        answer = get(raw_stack, f"/{name}")
        assert (answer.status, answer.value("x-cache")) == (200, result)
        assert answer.body == f"body of {name}".encode()


@pytest.mark.parametrize("status", [299, 599, 999])
def test_any_status_is_relayed(raw_stack: Stack, name: str, status: int) -> None:
    """RFC 9110 §15: a recipient treats an unknown status like the x00 of its class, and
    a proxy relays it as it is. 999 fails under uvicorn, which knows only 100-599."""
    raw_stack.origin.configure(name, status=status, body="unusual")
    for _ in range(2):
        answer = get(raw_stack, f"/{name}")
        assert (answer.status, answer.body) == (status, b"unusual")


@pytest.mark.parametrize(
    "value",
    ["a\x01b", "a\rb", "a\x7fb", "a\x00b", "a\x1bb"],
    ids=["SOH", "CR", "DEL", "NUL", "ESC"],
)
def test_a_control_byte_in_a_value_is_a_502_never_stored(
    raw_stack: Stack, name: str, value: str
) -> None:
    lines = ["Cache-Control: max-age=60", f"X-Bad: {value}"]
    raw_stack.origin.configure(name, raw=raw_reply("200 OK", lines, b"tainted"))
    for count in (1, 2):
        answer = get(raw_stack, f"/{name}")
        assert answer.status == 502
        assert b"tainted" not in answer.body
        assert raw_stack.origin.count(name) == count


def test_hop_by_hop_and_nominated_fields_are_never_relayed(raw_stack: Stack, name: str) -> None:
    lines = [
        "Cache-Control: max-age=60",
        "CONNECTION: X-Foo, keep-alive",
        "connection: x-BAR",
        "x-foo: 1",
        "X-BAR: 2",
        "X-Kept: 3",
        "KEEP-ALIVE: timeout=5",
        "Proxy-Connection: keep-alive",
        "te: trailers",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
    ]
    raw_stack.origin.configure(name, raw=raw_reply("200 OK", lines, b"hop"))
    for result in ("MISS", "HIT"):
        answer = check(get(raw_stack, f"/{name}"), frozenset({"x-foo", "x-bar"}))
        assert (answer.value("x-cache"), answer.body) == (result, b"hop")
        assert answer.value("x-kept") == "3"


# -- property: any mix of origin fields keeps the framing and the body -------------------

POOL: dict[str, list[str]] = {
    "cache-control": [
        "max-age=60",
        "no-store",
        "private",
        "no-cache",
        "public, s-maxage=30",
        "max-age=0, must-revalidate",
        "max-age=60, stale-while-revalidate=30",
    ],
    "content-type": ["text/plain", "application/octet-stream"],
    "etag": ['"v1"', 'W/"v2"'],
    "vary": ["Accept-Encoding", "X-Custom-Request"],
    "set-cookie": ["s=1; Path=/"],
    "keep-alive": ["timeout=5, max=100"],
    "x-custom": ["1", "a, b"],
    "date": ["Mon, 01 Jan 2024 00:00:00 GMT"],
}


@dataclass
class OriginReplySpec:
    fields: list[tuple[str, str]]
    connection: list[str]
    chunked: bool
    body: bytes

    @property
    def nominated(self) -> frozenset[str]:
        return frozenset(t.lower() for t in self.connection) - SERVER_CONNECTION_TOKENS

    def end_to_end(self) -> dict[str, str]:
        dropped = HOP_BY_HOP | self.nominated
        return {k.lower(): v for k, v in self.fields if k.lower() not in dropped}

    def raw(self) -> str:
        lines = [f"{k}: {v}" for k, v in self.fields]
        if self.connection:
            lines.append(f"cOnNeCtIoN: {', '.join(self.connection)}")
        return raw_reply("200 OK", lines, self.body, self.chunked)


def any_case(text: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(text), max_size=len(text))
    return flips.map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(text, up, strict=True))
    )


@st.composite
def origin_replies(draw: st.DrawFn) -> OriginReplySpec:
    names = draw(st.lists(st.sampled_from(sorted(POOL)), unique=True))
    fields = [(draw(any_case(n)), draw(st.sampled_from(POOL[n]))) for n in names]
    connection: list[str] = []
    if draw(st.booleans()):
        candidates = [*names, "keep-alive", "close"]
        picked = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True))
        connection = [draw(any_case(c)) for c in picked]
    return OriginReplySpec(fields, connection, draw(st.booleans()), draw(st.binary(max_size=64)))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(reply=origin_replies())
def test_any_origin_field_set_keeps_framing_and_body(
    raw_stack: Stack, reply: OriginReplySpec
) -> None:
    name = f"h{uuid.uuid4().hex[:12]}"
    raw_stack.origin.configure(name, raw=reply.raw())
    print(f"origin reply for /{name}: {reply.raw()!r}")
    kept = reply.end_to_end()
    # A Date the origin's Connection named is dropped, and the proxy adds its own.
    forbidden = reply.nominated - {"date"}
    for _ in range(2):
        answer = check(get(raw_stack, f"/{name}"), forbidden)
        result = answer.value("x-cache")
        assert result in RESULTS
        assert (answer.status, answer.body) == (200, reply.body)
        for field, value in kept.items():
            if field == "set-cookie":
                # Never stored, so never on a HIT; relayed otherwise.
                assert answer.values(field) == ([] if result == "HIT" else [value])
            elif field != "date":
                assert answer.values(field) == [value], (field, answer.fields)
        if "date" in kept:
            assert answer.values("date") == [kept["date"]]
        elif "date" in reply.nominated:
            assert answer.values("date") != POOL["date"]
