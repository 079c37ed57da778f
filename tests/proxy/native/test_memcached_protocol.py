"""The memcached request parser and reply framer, without sockets."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.native.memcached_protocol import (
    Invalid,
    Kind,
    ReplyFramer,
    Request,
    RequestParser,
    value_blocks,
)

MAX_REQUEST = 4096
MAX_VALUE = 1000
MAX_KEYS = 8


def parse(stream: bytes) -> list[Request | Invalid]:
    return RequestParser(MAX_REQUEST, MAX_VALUE, MAX_KEYS).feed(stream)


def one(stream: bytes) -> Request:
    items = parse(stream)
    assert len(items) == 1, items
    assert isinstance(items[0], Request), items
    return items[0]


def error(stream: bytes) -> Invalid:
    items = parse(stream)
    assert len(items) == 1, items
    assert isinstance(items[0], Invalid), items
    return items[0]


# -- retrieval ------------------------------------------------------------------------------


def test_get_with_many_keys_keeps_their_order() -> None:
    req = one(b"get b a c a\r\n")
    assert (req.command, req.kind, req.keys, req.payload) == (
        b"get",
        Kind.RETRIEVAL,
        [b"b", b"a", b"c", b"a"],
        b"get ",
    )


def test_gets_gat_and_gats_carry_their_prefix_and_exptime() -> None:
    assert one(b"gets k\r\n").payload == b"gets "
    gat = one(b"gat 100 k1 k2\r\n")
    assert (gat.payload, gat.exptime, gat.keys) == (b"gat 100 ", 100, [b"k1", b"k2"])
    assert one(b"gats -1 k\r\n").payload == b"gats -1 "


def test_a_bare_newline_ends_a_line_and_extra_spaces_are_ignored() -> None:
    assert one(b"get  a   b\n").keys == [b"a", b"b"]


def test_retrieval_errors() -> None:
    assert error(b"get\r\n").reply == b"CLIENT_ERROR no key given\r\n"
    assert error(b"gat x k\r\n").reply == b"CLIENT_ERROR exptime must be a whole number\r\n"
    too_many = b"get " + b" ".join(b"k%d" % i for i in range(MAX_KEYS + 1)) + b"\r\n"
    assert error(too_many).reply == b"CLIENT_ERROR 9 keys; the limit is 8\r\n"
    assert error(b"get " + b"x" * 251 + b"\r\n").reply == (
        b"CLIENT_ERROR key is 251 bytes; the limit is 250\r\n"
    )
    assert error(b"get a\tb\r\n").reply == (
        b"CLIENT_ERROR key contains a space or a control byte\r\n"
    )
    reserved = error(b"get rlhc:x\r\n")
    assert reserved.reply.startswith(b"CLIENT_ERROR keys starting with 'rlhc:' are reserved")
    assert not reserved.close


# -- storage --------------------------------------------------------------------------------


def test_set_is_forwarded_byte_for_byte() -> None:
    raw = b"set k 5 0 3\r\nabc\r\n"
    req = one(raw)
    assert (req.command, req.kind, req.keys, req.payload, req.exptime, req.noreply) == (
        b"set",
        Kind.STORAGE,
        [b"k"],
        raw,
        0,
        False,
    )


def test_noreply_is_stripped_for_the_backend_and_kept_for_the_front() -> None:
    req = one(b"add k 0 60 2 noreply\r\nhi\r\n")
    assert req.noreply
    assert req.payload == b"add k 0 60 2\r\nhi\r\n"


def test_cas_keeps_its_unique() -> None:
    req = one(b"cas k 1 2 3 99\r\nabc\r\n")
    assert req.payload == b"cas k 1 2 3 99\r\nabc\r\n"
    assert req.with_exptime(7) == b"cas k 1 7 3 99\r\nabc\r\n"


def test_with_exptime_rewrites_only_the_exptime() -> None:
    req = one(b"set k 5 0 3 noreply\r\nabc\r\n")
    assert req.with_exptime(30) == b"set k 5 30 3\r\nabc\r\n"


def test_with_exptime_copes_with_bare_newlines_and_extra_spaces() -> None:
    req = one(b"set  k 5 0 3\nabc\r\n")
    assert req.payload == b"set  k 5 0 3\nabc\r\n"  # forwarded as sent
    assert req.with_exptime(30) == b"set k 5 30 3\r\nabc\r\n"


def test_values_may_hold_any_bytes_including_crlf() -> None:
    assert one(b"set k 0 0 4\r\n\r\n\r\n\r\n").payload.endswith(b"\r\n\r\n\r\n")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"set k x 0 1", b"flags must be a 32-bit unsigned number"),
        (b"set k 4294967296 0 1", b"flags must be a 32-bit unsigned number"),
        (b"set k 0 soon 1", b"exptime must be a whole number"),
        (b"set k 0 0 1 junk", b"bad command line format"),
        (b"cas k 0 0 1", b"bad command line format"),
        (b"cas k 0 0 1 -3", b"cas unique must be a 64-bit unsigned number"),
        (b"set " + b"k" * 251 + b" 0 0 1", b"key is 251 bytes; the limit is 250"),
    ],
)
def test_a_bad_storage_line_is_answered_and_its_data_skipped(line: bytes, reason: bytes) -> None:
    items = parse(line + b"\r\nx\r\nget after\r\n")
    assert items[0] == Invalid(b"CLIENT_ERROR " + reason + b"\r\n")
    assert isinstance(items[1], Request)
    assert items[1].keys == [b"after"]


def test_a_bad_storage_line_with_noreply_gets_no_answer() -> None:
    items = parse(b"set k x 0 1 noreply\r\nx\r\nget after\r\n")
    assert items[0] == Invalid(b"")
    assert isinstance(items[1], Request)


@pytest.mark.parametrize("line", [b"set k 0 0 -1", b"set k 0 0 ten", b"set k 0 0", b"ms k x"])
def test_an_unreadable_length_closes_the_connection(line: bytes) -> None:
    items = parse(line + b"\r\nx\r\nget after\r\n")
    assert items == [Invalid(b"CLIENT_ERROR bad data chunk\r\n", close=True)]


def test_a_data_block_without_its_crlf_closes_the_connection() -> None:
    items = parse(b"set k 0 0 1\r\nxyz\r\nget after\r\n")
    assert items == [Invalid(b"CLIENT_ERROR bad data chunk\r\n", close=True)]


def test_an_oversize_value_is_refused_and_skipped_across_reads() -> None:
    parser = RequestParser(MAX_REQUEST, MAX_VALUE, MAX_KEYS)
    size = MAX_VALUE + 1
    first = parser.feed(b"set k 0 0 %d\r\n" % size + b"v" * 100)
    assert first == [Invalid(b"CLIENT_ERROR value is 1001 bytes; the limit is 1000\r\n")]
    assert parser.feed(b"v" * (size - 100)) == []
    rest = parser.feed(b"\r\nget after\r\n")
    assert len(rest) == 1
    assert isinstance(rest[0], Request)
    assert rest[0].keys == [b"after"]
    assert parser.buffered == 0


def test_a_request_over_the_request_limit_is_refused_and_skipped() -> None:
    parser = RequestParser(100, MAX_VALUE, MAX_KEYS)
    items = parser.feed(b"set k 0 0 200\r\n" + b"v" * 200 + b"\r\nversion\r\n")
    assert items[0] == Invalid(b"CLIENT_ERROR request is 217 bytes; the limit is 100\r\n")
    assert isinstance(items[1], Request)
    assert items[1].command == b"version"


def test_a_line_over_the_request_limit_closes_the_connection() -> None:
    parser = RequestParser(100, MAX_VALUE, MAX_KEYS)
    assert parser.feed(b"get " + b"k" * 60) == []
    assert parser.feed(b"k" * 60) == [Invalid(b"CLIENT_ERROR line too long\r\n", close=True)]


# -- one-line commands -----------------------------------------------------------------------


def test_keyed_commands() -> None:
    assert one(b"delete k\r\n").payload == b"delete k\r\n"
    assert one(b"delete k 0 noreply\r\n").payload == b"delete k\r\n"
    incr = one(b"incr k 18446744073709551615\r\n")
    assert (incr.kind, incr.payload) == (Kind.KEYED, b"incr k 18446744073709551615\r\n")
    touch = one(b"touch k 10 noreply\r\n")
    assert (touch.exptime, touch.noreply, touch.with_exptime(5)) == (10, True, b"touch k 5\r\n")


def test_keyed_errors() -> None:
    assert error(b"incr k -1\r\n").reply == b"CLIENT_ERROR invalid numeric delta argument\r\n"
    assert error(b"decr k 18446744073709551616\r\n").reply == (
        b"CLIENT_ERROR invalid numeric delta argument\r\n"
    )
    assert error(b"delete k 5\r\n").reply == b"CLIENT_ERROR bad command line format\r\n"
    assert error(b"touch k\r\n").reply == b"CLIENT_ERROR bad command line format\r\n"


def test_local_commands() -> None:
    assert [r.command for r in parse(b"version\r\nverbosity 1\r\nmn\r\nquit\r\n")
            if isinstance(r, Request)] == [b"version", b"verbosity", b"mn", b"quit"]  # fmt: skip
    assert one(b"verbosity 1 noreply\r\n").noreply


def test_unknown_and_empty_commands_are_client_errors() -> None:
    assert error(b"stats\r\n").reply == b"CLIENT_ERROR unknown command 'stats'\r\n"
    assert error(b"GET k\r\n").reply == b"CLIENT_ERROR unknown command 'GET'\r\n"
    assert error(b"\r\n").reply == b"CLIENT_ERROR empty command line\r\n"


# -- meta -----------------------------------------------------------------------------------


def test_meta_flags_pass_through_and_q_becomes_front_side_suppression() -> None:
    mg = one(b"mg k v t f O123 q\r\n")
    assert (mg.kind, mg.payload, mg.quiet) == (Kind.META, b"mg k v t f O123\r\n", (b"EN",))
    md = one(b"md k q\r\n")
    assert (md.payload, md.quiet) == (b"md k\r\n", (b"HD",))
    assert one(b"ma k q v\r\n").quiet == (b"HD", b"VA")


def test_ms_carries_its_data_and_a_ttl_that_can_be_capped() -> None:
    ms = one(b"ms k 3 T0 F5\r\nabc\r\n")
    assert ms.payload == b"ms k 3 T0 F5\r\nabc\r\n"
    assert (ms.exptime, ms.with_exptime(30)) == (0, b"ms k 3 T30 F5\r\nabc\r\n")
    plain = one(b"ms k 1\r\nx\r\n")
    # No T: no expiry, and a cap must add one.
    assert (plain.exptime, plain.with_exptime(30)) == (0, b"ms k 1 T30\r\nx\r\n")
    assert one(b"mg k T60 v\r\n").with_exptime(9) == b"mg k T9 v\r\n"
    assert one(b"mg k v\r\n").exptime is None


def test_a_base64_key_routes_by_its_decoded_bytes() -> None:
    binary = bytes(range(20))
    encoded = base64.b64encode(binary)
    req = one(b"mg " + encoded + b" b v\r\n")
    assert req.keys == [binary]
    assert req.payload == b"mg " + encoded + b" b v\r\n"
    assert error(b"mg !!! b v\r\n").reply == b"CLIENT_ERROR key is not valid base64\r\n"


def test_meta_errors() -> None:
    assert error(b"mg\r\n").reply == b"CLIENT_ERROR bad command line format\r\n"
    assert error(b"mg k Tsoon\r\n").reply == b"CLIENT_ERROR ttl must be a whole number\r\n"
    assert error(b"mn x\r\n").reply == b"CLIENT_ERROR bad command line format\r\n"


# -- streaming ------------------------------------------------------------------------------

_KEYS = st.sampled_from([b"a", b"bb", b"k:1", b"x" * 250, b"\xc3\xa9"])
_VALUES = st.binary(max_size=40) | st.sampled_from([b"\r\n", b"get a\r\n", b"END\r\n"])


def _storage(verb: str, key: bytes, value: bytes, noreply: bool) -> bytes:
    cas = " 7" if verb == "cas" else ""
    tail = " noreply" if noreply else ""
    line = f"{verb} ".encode() + key + f" 1 0 {len(value)}{cas}{tail}\r\n".encode()
    return line + value + b"\r\n"


_COMMANDS = st.one_of(
    st.builds(
        lambda ks: b"get " + b" ".join(ks) + b"\r\n", st.lists(_KEYS, min_size=1, max_size=4)
    ),
    st.builds(
        _storage, st.sampled_from(["set", "add", "append", "cas"]), _KEYS, _VALUES, st.booleans()
    ),
    st.builds(lambda k, v: b"ms " + k + b" %d T5\r\n" % len(v) + v + b"\r\n", _KEYS, _VALUES),
    st.builds(lambda k: b"mg " + k + b" v q\r\n", _KEYS),
    st.sampled_from(
        [
            b"version\r\n",
            b"mn\r\n",
            b"incr a 1\r\n",
            b"bogus\r\n",
            b"set k 0 0 2000\r\n" + b"v" * 2000 + b"\r\n",
            b"get\n",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(commands=st.lists(_COMMANDS, max_size=20), cuts=st.lists(st.integers(0, 10_000)))
def test_any_split_of_a_pipelined_stream_parses_identically(
    commands: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(commands)
    whole = parse(stream)
    assert len(whole) == len(commands)
    parser = RequestParser(MAX_REQUEST, MAX_VALUE, MAX_KEYS)
    pieces: list[Request | Invalid] = []
    bounds = sorted({c % (len(stream) + 1) for c in cuts})
    start = 0
    for cut in [*bounds, len(stream)]:
        pieces += parser.feed(stream[start:cut])
        start = cut
    assert pieces == whole
    assert parser.buffered == 0


# -- backend replies ------------------------------------------------------------------------

_REPLIES = [
    b"STORED\r\n",
    b"END\r\n",
    b"VALUE a 0 3\r\nabc\r\nVALUE bb 5 4 99\r\nEND\r\r\nEND\r\n",
    b"VA 2 t-1\r\n\r\n\r\n",
    b"EN\r\n",
    b"HD O1 k\r\n",
    b"SERVER_ERROR out of memory\r\n",
    b"VALUE a 0 1\r\nx\r\nSERVER_ERROR broken\r\n",
    b"12345\r\n",
    b"MN\r\n",
]


@settings(max_examples=200, deadline=None)
@given(order=st.lists(st.sampled_from(_REPLIES), max_size=12), cuts=st.lists(st.integers(0, 999)))
def test_the_framer_cuts_replies_whole_at_any_split(order: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(order)
    framer = ReplyFramer()
    got: list[bytes] = []
    start = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        framer.feed(stream[start:cut])
        start = cut
        reply = framer.gets()
        while reply is not False:
            assert isinstance(reply, bytes)
            got.append(reply)
            reply = framer.gets()
    assert got == order


def test_value_blocks_split_a_retrieval_by_key() -> None:
    reply = b"VALUE a 0 3 7\r\nabc\r\nVALUE b 1 2 8\r\n\r\n\r\nEND\r\n"
    assert value_blocks(reply) == {
        b"a": b"VALUE a 0 3 7\r\nabc\r\n",
        b"b": b"VALUE b 1 2 8\r\n\r\n\r\n",
    }
    assert value_blocks(b"END\r\n") == {}
    assert value_blocks(b"SERVER_ERROR down\r\n") == {}
