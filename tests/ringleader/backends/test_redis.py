"""redis RESP client against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from ringleader.backends.errors import BackendProtocolError
from tests.ringleader.backends.conftest import Backend, raw_exchange, run, start_backend
from tests.support.servers import ProcessGroup


@pytest.fixture
def redis(procs: ProcessGroup) -> Backend:
    return start_backend(procs, "redis")


def redis_command(port: int, *command: str) -> bytes:
    return raw_exchange(port, (" ".join(command) + "\r\n").encode(), b"\r\n")


def test_database_from_the_url_receives_the_writes(redis: Backend) -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        db3, db0 = redis.client(db=3), redis.client(db=0)
        try:
            await db3.set(b"where", b"three", 0)
            return await db3.get(b"where"), await db0.get(b"where")
        finally:
            await db3.close()
            await db0.close()

    in_db3, in_db0 = run(scenario())
    assert (in_db3, in_db0) == (b"three", None)
    # Checked from outside our client too.
    reply = raw_exchange(redis.proc.port, b"SELECT 3\r\nGET where\r\n", b"three\r\n")
    assert reply == b"+OK\r\n$5\r\nthree\r\n"
    assert redis_command(redis.proc.port, "EXISTS", "where") == b":0\r\n"


def test_flush_drops_only_its_own_database(redis: Backend) -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        db3, db0 = redis.client(db=3), redis.client(db=0)
        try:
            await db3.set(b"k", b"3", 0)
            await db0.set(b"k", b"0", 0)
            await db3.flush()
            return await db3.get(b"k"), await db0.get(b"k")
        finally:
            await db3.close()
            await db0.close()

    assert run(scenario()) == (None, b"0")


def test_database_is_selected_again_after_a_reconnect(redis: Backend) -> None:
    async def scenario() -> bytes | None:
        c = redis.client(db=5)
        try:
            await c.ping()
            redis.restart()
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    await c.set(b"after", b"5", 0)
                    break
                except Exception:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            return await c.get(b"after")
        finally:
            await c.close()

    assert run(scenario()) == b"5"
    assert redis_command(redis.proc.port, "EXISTS", "after") == b":0\r\n"  # not in db 0


def test_a_database_the_server_lacks_fails_clearly_without_leaking_connections(
    redis: Backend,
) -> None:
    async def scenario() -> None:
        c = redis.client(db=99)  # redis has 16 databases by default
        try:
            for _ in range(5):
                with pytest.raises(BackendProtocolError, match="SELECT"):
                    await c.get(b"k")
                await asyncio.sleep(FAST_BACKOFF_CAP)  # out of the backoff window
        finally:
            await c.close()

    run(scenario())
    info = raw_exchange(redis.proc.port, b"INFO clients\r\n", b"\r\n\r\n")
    connected = int(info.split(b"connected_clients:")[1].split(b"\r\n")[0])
    assert connected == 1  # only the INFO probe itself


FAST_BACKOFF_CAP = 0.25
