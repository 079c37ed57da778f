"""Behaviour every client gets from the pipelined connection pool, against real memcached
and redis: multiplexing, connection reuse, bounded timeouts, backoff, reconnect, isolation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import uvloop

from ringleader.backends import BackendTimeout, BackendUnavailable, ClientSettings
from ringleader.backends.errors import BackendError
from ringleader.backends.memcached import MemcachedClient
from ringleader.backends.pipeline import ConnectionPool
from tests.ringleader.backends.conftest import (
    FAST,
    Backend,
    run,
    start_backend,
    timed,
)
from tests.support.servers import LOOPBACK, ProcessGroup, free_port


def test_500_concurrent_gets_on_one_connection_each_get_their_own_value(
    backend: Backend,
) -> None:
    keys = [f"pipelined:{i}".encode() for i in range(500)]

    async def scenario() -> list[bytes | None]:
        client = backend.client(ClientSettings(connect_timeout=0.5, request_timeout=5.0))
        try:
            await asyncio.gather(*(client.set(k, b"value-of-" + k, 0) for k in keys))
            return list(await asyncio.gather(*(client.get(k) for k in keys)))
        finally:
            await client.close()

    before = backend.connections_accepted()
    values = run(scenario())
    assert values == [b"value-of-" + k for k in keys]
    # One connection carried all 1000 requests (plus the stats probe's own connection).
    assert backend.connections_accepted() - before == 2


def test_sequential_requests_reuse_the_connection(backend: Backend) -> None:
    async def scenario() -> None:
        client = backend.client()
        try:
            for i in range(100):
                await client.set(b"reuse", str(i).encode(), 0)
                assert await client.get(b"reuse") == str(i).encode()
        finally:
            await client.close()

    before = backend.connections_accepted()
    run(scenario())
    assert backend.connections_accepted() - before == 2


def test_request_to_a_stopped_backend_times_out_within_the_bound(backend: Backend) -> None:
    async def scenario() -> tuple[float, object]:
        client = backend.client()
        try:
            await client.ping()  # connected before the stop
            backend.proc.stop()
            return await timed(lambda: client.get(b"k"))
        finally:
            backend.proc.cont()
            await client.close()

    elapsed, result = run(scenario())
    assert isinstance(result, BackendTimeout), result
    assert FAST.request_timeout * 0.9 <= elapsed < FAST.request_timeout + 0.4


def test_connect_to_an_unresponsive_address_times_out_within_the_bound(
    unresponsive_port: int,
) -> None:
    async def scenario() -> tuple[float, object]:
        client = MemcachedClient("silent", LOOPBACK, unresponsive_port, FAST)
        try:
            return await timed(lambda: client.get(b"k"))
        finally:
            await client.close()

    elapsed, result = run(scenario())
    assert isinstance(result, BackendTimeout), result
    assert "connect timed out" in str(result)
    assert FAST.connect_timeout * 0.9 <= elapsed < FAST.connect_timeout + 0.4


def test_refused_connection_is_unavailable_and_the_backoff_fails_fast() -> None:
    port = free_port()  # nothing listens here

    async def scenario() -> tuple[object, list[tuple[float, object]]]:
        client = MemcachedClient("gone", LOOPBACK, port, ClientSettings(
            0.5, 0.5, reconnect_backoff_min=1.0, reconnect_backoff_max=1.0))  # fmt: skip
        try:
            _, first = await timed(lambda: client.get(b"k"))
            rest: list[tuple[float, object]] = [
                await timed(lambda: client.get(b"k")) for _ in range(200)
            ]
            return first, rest
        finally:
            await client.close()

    first, rest = run(scenario())
    assert isinstance(first, BackendUnavailable)
    assert "connect failed" in str(first)
    for _, result in rest:
        assert isinstance(result, BackendUnavailable)
        assert "in reconnect backoff" in str(result)
    # No connect attempt, no waiting: microseconds each (bounds loose for a busy machine).
    timings = sorted(elapsed for elapsed, _ in rest)
    assert timings[len(timings) // 2] < 0.001
    assert timings[-1] < 0.05


def test_backoff_makes_no_new_connections_inside_the_window_and_retries_after_it() -> None:
    accepted = 0

    async def scenario() -> tuple[int, int]:
        nonlocal accepted

        async def slam_door(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        server = await asyncio.start_server(slam_door, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        settings = ClientSettings(0.5, 0.5, reconnect_backoff_min=0.3, reconnect_backoff_max=0.3)
        client = MemcachedClient("flaky", LOOPBACK, port, settings)
        try:
            # Many requests fail inside one window: the first opens one connection, which
            # the server closes; every later one is refused by the backoff.
            results = await asyncio.gather(
                *(client.get(b"k") for _ in range(50)), return_exceptions=True
            )
            assert all(isinstance(r, BackendUnavailable) for r in results), results
            for _ in range(50):
                with pytest.raises(BackendUnavailable, match="in reconnect backoff"):
                    await client.get(b"k")
            in_window = accepted
            await asyncio.sleep(0.35)  # the window is the thing under test
            with pytest.raises(BackendUnavailable):
                await client.get(b"k")
            return in_window, accepted
        finally:
            await client.close()
            server.close()

    in_window, after = run(scenario())
    assert in_window == 1
    assert after == 2


def test_pool_reconnects_by_itself_after_the_backend_is_killed_and_restarted(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        client = backend.client()
        try:
            await client.set(b"before", b"1", 0)
            backend.restart()
            # The old connection is dead; the first request learns it, then the pool must
            # reconnect on its own within the capped backoff.
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    await client.set(b"after", b"2", 0)
                    break
                except BackendError:
                    assert time.monotonic() < deadline, "client never reconnected"
                    await asyncio.sleep(0.02)
            assert await client.get(b"after") == b"2"
            assert await client.get(b"before") is None  # a new server, empty
        finally:
            await client.close()

    run(scenario())


def test_recovery_after_restart_takes_at_most_the_capped_backoff(backend: Backend) -> None:
    async def scenario() -> float:
        client = backend.client()
        try:
            await client.ping()
            backend.proc.kill()
            # Fail many times so the backoff reaches its cap.
            for _ in range(20):
                with pytest.raises(BackendUnavailable):
                    await client.ping()
                await asyncio.sleep(0.01)
            start = backend.procs.memcached if backend.kind == "memcached" else backend.procs.redis
            backend.proc = start(port=backend.proc.port)
            up_at = time.monotonic()
            while True:
                try:
                    await client.ping()
                    return time.monotonic() - up_at
                except BackendUnavailable:
                    await asyncio.sleep(0.005)
                    assert time.monotonic() - up_at < 5.0
        finally:
            await client.close()

    assert run(scenario()) < FAST.reconnect_backoff_max + 0.3


@pytest.mark.parametrize("fault", ["stopped", "killed"])
def test_a_stopped_or_killed_backend_never_stalls_requests_to_another(
    procs: ProcessGroup, fault: str
) -> None:
    sick = start_backend(procs, "memcached")
    healthy = start_backend(procs, "redis")

    async def scenario() -> tuple[list[float], list[object]]:
        sick_client, healthy_client = sick.client(name="sick"), healthy.client(name="healthy")
        try:
            await sick_client.ping()
            await healthy_client.set(b"k", b"v", 0)
            if fault == "stopped":
                sick.proc.stop()
            else:
                sick.proc.kill()
            # Keep requests to the sick backend in flight the whole time...
            sick_calls = [asyncio.ensure_future(sick_client.get(b"k")) for _ in range(100)]
            latencies = []
            loop = asyncio.get_running_loop()
            until = loop.time() + FAST.request_timeout * 1.5
            while loop.time() < until:
                # ...while the healthy one answers as fast as ever.
                elapsed, value = await timed(lambda: healthy_client.get(b"k"))
                assert value == b"v"
                latencies.append(elapsed)
            return latencies, await asyncio.gather(*sick_calls, return_exceptions=True)
        finally:
            if fault == "stopped":
                sick.proc.cont()
            await sick_client.close()
            await healthy_client.close()

    latencies, sick_results = run(scenario())
    assert len(latencies) > 50
    # A stall would last the request timeout (0.3 s); the bound leaves room for a busy box.
    assert max(latencies) < 0.15, f"slowest healthy request took {max(latencies):.3f}s"
    expected = BackendTimeout if fault == "stopped" else BackendUnavailable
    assert all(isinstance(r, expected) for r in sick_results), sick_results[:3]


def test_all_requests_pending_on_a_dead_connection_fail_with_one_error_and_one_backoff_step() -> (
    None
):
    async def scenario() -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            writer.close()

        server = await asyncio.start_server(swallow, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool("b", LOOPBACK, port, FAST, lambda: _NeverParser())
        try:
            results = await asyncio.gather(
                *(pool.request(b"x") for _ in range(20)), return_exceptions=True
            )
            assert len({id(r) for r in results}) == 1
            assert isinstance(results[0], BackendUnavailable)
            # One failure doubles nothing yet: the window is the minimum.
            assert pool._backoff == FAST.reconnect_backoff_min
        finally:
            await pool.close()
            server.close()

    run(scenario())


class _NeverParser:
    def feed(self, data: bytes) -> None:
        pass

    def gets(self) -> object:
        return False


def test_closed_client_fails_pending_requests() -> None:
    async def scenario() -> None:
        received = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            received.set()
            await reader.read()

        server = await asyncio.start_server(silent, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        client = MemcachedClient("b", LOOPBACK, port, ClientSettings(0.5, 5.0))
        try:
            pending = asyncio.ensure_future(client.get(b"k"))
            await asyncio.wait_for(received.wait(), 2.0)  # the request is on the wire
            await client.close()
            with pytest.raises(BackendUnavailable, match="client closed"):
                await asyncio.wait_for(pending, 1.0)
        finally:
            server.close()

    run(scenario())


class Stall(asyncio.Protocol):
    """A connection whose reply holds the whole loop up, as a stalled host would, after
    `meanwhile()`: the stall comes while the loop handles a socket's events."""

    def __init__(self, meanwhile: Callable[[], None], seconds: float) -> None:
        self.meanwhile = meanwhile
        self.seconds = seconds
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.meanwhile()
        time.sleep(self.seconds)
        self.done.set_result(None)


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_a_reply_waiting_when_a_stalled_worker_resumes_is_not_a_timeout(
    procs: ProcessGroup, kind: str
) -> None:
    """The fault is the stall itself: the worker is held back past the request timeout
    while it handles another socket's events, and the slow backend's reply arrives
    meanwhile. uvloop (the proxy's loop) then runs due timers before it polls the sockets
    again, so the watchdog finds the request overdue before the loop has read its reply."""
    slow, other = start_backend(procs, kind), start_backend(procs, kind)
    ping = b"version\r\n" if kind == "memcached" else b"PING\r\n"

    async def scenario() -> None:
        client = slow.client()
        try:
            await client.set(b"k", b"late", 0)
            slow.proc.stop()
            try:
                waiting = asyncio.ensure_future(client.get(b"k"))
                loop = asyncio.get_running_loop()
                stall = Stall(slow.proc.cont, FAST.request_timeout * 2)
                transport, _ = await loop.create_connection(
                    lambda: stall, LOOPBACK, other.proc.port
                )
                transport.write(ping)
                await stall.done
                transport.close()
            finally:
                slow.proc.cont()
            assert await waiting == b"late"
        finally:
            await client.close()

    uvloop.run(scenario())
