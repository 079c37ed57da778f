"""memcached text-protocol client against a real memcached, and its reply parser."""

from __future__ import annotations

import pytest

from ringleader.backends.errors import BackendRejected
from ringleader.backends.memcached import MemcachedReplyParser
from tests.ringleader.backends.conftest import Backend, raw_exchange, run, start_backend
from tests.support.servers import ProcessGroup


@pytest.fixture
def memcached(procs: ProcessGroup) -> Backend:
    return start_backend(procs, "memcached")


def test_keys_go_to_memcached_byte_for_byte(memcached: Backend) -> None:
    key = b"caf\xc3\xa9:\x80\xff"

    async def scenario() -> None:
        c = memcached.client()
        try:
            await c.set(key, b"v", 0)
        finally:
            await c.close()

    run(scenario())
    # No prefix, no re-encoding: another client asking for the same bytes finds it.
    reply = raw_exchange(memcached.proc.port, b"get " + key + b"\r\n", b"END\r\n")
    assert reply == b"VALUE " + key + b" 0 1\r\nv\r\nEND\r\n"


def test_ttl_over_30_days_is_sent_as_an_absolute_time(memcached: Backend) -> None:
    # memcached reads an exptime above 30 days as a unix time; sent raw, 31 days would be a
    # date in 1970 and the item would vanish at once.
    async def scenario() -> bytes | None:
        c = memcached.client()
        try:
            await c.set(b"long", b"v", 31 * 24 * 3600)
            return await c.get(b"long")
        finally:
            await c.close()

    assert run(scenario()) == b"v"


def test_object_too_large_is_backend_rejected_and_the_connection_stays_usable(
    memcached: Backend,
) -> None:
    async def scenario() -> None:
        c = memcached.client()
        try:
            with pytest.raises(BackendRejected, match="object too large") as caught:
                await c.set(b"big", b"x" * (1024 * 1024 + 1), 0)
            assert caught.value.kind == "rejected"
            await c.set(b"small", b"ok", 0)
            assert await c.get(b"small") == b"ok"
        finally:
            await c.close()

    before = memcached.connections_accepted()
    run(scenario())
    assert memcached.connections_accepted() - before == 2  # no reconnect was needed


def test_a_value_of_1000_kib_round_trips(memcached: Backend) -> None:
    value = bytes(range(256)) * 4000  # 1,024,000 bytes

    async def scenario() -> bytes | None:
        c = memcached.client()
        try:
            await c.set(b"large", value, 0)
            return await c.get(b"large")
        finally:
            await c.close()

    assert run(scenario()) == value


# The parser, fed by hand.


def _parse_all(chunks: list[bytes]) -> list[object]:
    parser = MemcachedReplyParser()
    out: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        reply = parser.gets()
        while reply is not False:
            out.append(reply)
            reply = parser.gets()
    return out


STREAM = (
    b"VALUE a 0 3\r\nabc\r\nEND\r\n"
    b"END\r\n"
    b"STORED\r\n"
    b"VALUE b 5 4 99\r\n\r\n\r\n\r\nEND\r\n"
    b"VALUE c 0 0\r\n\r\nVALUE d 0 1\r\nd\r\nEND\r\n"
    b"NOT_FOUND\r\n"
)
EXPECTED = [[b"abc"], [], b"STORED", [b"\r\n\r\n"], [b"", b"d"], b"NOT_FOUND"]


def test_parser_splits_a_pipelined_stream_into_replies() -> None:
    assert _parse_all([STREAM]) == EXPECTED


def test_parser_handles_replies_arriving_one_byte_at_a_time() -> None:
    assert _parse_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize(
    "bad", [b"VALUE a 0 x\r\n", b"VALUE a 0\r\n", b"VALUE a 0 1\r\na\r\nSTORED\r\n"]
)
def test_parser_refuses_malformed_retrievals(bad: bytes) -> None:
    parser = MemcachedReplyParser()
    parser.feed(bad)
    with pytest.raises(ValueError, match=r"VALUE|inside a retrieval"):
        parser.gets()
