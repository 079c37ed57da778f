"""The contract every backend client keeps, against real memcached and redis-server: the
proxy treats the two alike, so one test states what both must do. What only one of them
does (memcached's absolute exptimes and item size, redis's databases) is in
test_memcached.py and test_redis.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from ringleader.backends.errors import BackendProtocolError
from tests.ringleader.backends.conftest import Backend, raw_exchange, run


def test_get_set_add_delete_ping_flush(backend: Backend) -> None:
    async def scenario() -> None:
        c = backend.client()
        try:
            await c.ping()
            assert await c.get(b"k") is None
            await c.set(b"k", b"v1", 0)
            assert await c.get(b"k") == b"v1"
            assert await c.add(b"k", b"v2", 0) is False
            assert await c.get(b"k") == b"v1"
            assert await c.add(b"fresh", b"f", 0) is True
            assert await c.delete(b"k") is True
            assert await c.delete(b"k") is False
            assert await c.get(b"k") is None
            await c.set(b"empty", b"", 0)
            assert await c.get(b"empty") == b""
            await c.flush()
            assert await c.get(b"fresh") is None
            assert await c.get(b"empty") is None
        finally:
            await c.close()

    run(scenario())


def test_values_are_binary_safe_including_protocol_markers(backend: Backend) -> None:
    tricky = [bytes(range(256)), b"\r\nEND\r\n", b"VALUE x 0 1\r\n", b"$-1\r\n", b"\r\n" * 100]

    async def scenario() -> list[bytes | None]:
        c = backend.client()
        try:
            for i, value in enumerate(tricky):
                await c.set(b"bin%d" % i, value, 0)
            return [await c.get(b"bin%d" % i) for i in range(len(tricky))]
        finally:
            await c.close()

    assert run(scenario()) == tricky


@pytest.mark.parametrize("op", ["set", "add"])
def test_a_short_ttl_expires(backend: Backend, op: str) -> None:
    async def scenario() -> float:
        c = backend.client()
        try:
            if op == "set":
                await c.set(b"ttl", b"v", 1)
            else:
                assert await c.add(b"ttl", b"v", 1) is True
            assert await c.get(b"ttl") == b"v"
            stored = time.monotonic()
            while await c.get(b"ttl") is not None:
                assert time.monotonic() - stored < 4.0, "item with ttl=1 never expired"
                await asyncio.sleep(0.02)
            return time.monotonic() - stored
        finally:
            await c.close()

    # memcached's clock ticks once a second, so a 1 s TTL ends 0..2 s after the set.
    assert run(scenario()) <= 2.5


def test_an_error_reply_is_one_requests_protocol_error(backend: Backend) -> None:
    if backend.kind == "redis":
        raw_exchange(backend.proc.port, b"LPUSH list x\r\n", b"\r\n")
        bad, match = (lambda c: c.get(b"list")), "WRONGTYPE"
    else:
        # A key with a space splits the command; memcached answers with an error line.
        bad, match = (lambda c: c.delete(b"two words")), "CLIENT_ERROR bad command line"

    async def scenario() -> None:
        c = backend.client()
        try:
            with pytest.raises(BackendProtocolError, match=match):
                await bad(c)
            # The connection carries on.
            await c.set(b"k", b"v", 0)
            assert await c.get(b"k") == b"v"
        finally:
            await c.close()

    run(scenario())
