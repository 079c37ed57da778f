"""Backend connections of the native fronts (proxy/native/upstream.py), in this process
against real redis-servers: replies in order, the greeting (AUTH, SELECT), and failures
that fail every waiting request at once instead of hanging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import redis
import uvloop

from proxy.metrics import ProxyMetrics
from proxy.native.front import Flusher
from proxy.native.redis import backend_greeting
from proxy.native.resp import ReplyFramer
from proxy.native.upstream import Upstreams
from proxy.router import RingState, Router
from ringleader.backend_url import parse_backend_url
from ringleader.backends import BackendError, ClientSettings
from ringleader.backends.errors import BackendProtocolError, BackendTimeout, BackendUnavailable
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, require_binary

SETTINGS = ClientSettings(connect_timeout=0.5, request_timeout=0.5)


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


def upstreams(urls: list[str], protocol: str = "redis") -> tuple[Upstreams, ProxyMetrics]:
    metrics = ProxyMetrics()
    specs = tuple(parse_backend_url(url) for url in urls)
    router = Router(SETTINGS, RingState(1, "fnv1a_64", specs), 30, metrics.failover_writes)
    ups = Upstreams(router, protocol, SETTINGS, ReplyFramer, Flusher(), metrics, backend_greeting)
    return ups, metrics


async def call(ups: Upstreams, key: bytes, *payloads: bytes) -> list[Any]:
    """Sends `payloads` to `key`'s owner in one turn; their replies, or errors."""
    upstream = ups.route(key)
    assert upstream is not None
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in payloads]
    for payload, future in zip(payloads, futures, strict=True):
        upstream.send(payload, future.set_result)
    return list(await asyncio.gather(*futures))


def test_replies_come_back_in_order_byte_for_byte(procs: ProcessGroup) -> None:
    server = procs.redis()

    async def main() -> None:
        ups, _ = upstreams([f"redis://{LOOPBACK}:{server.port}/3"])
        replies = await call(ups, b"k", b"SET k v\r\n", b"GET k\r\n", b"INCR k\r\n",
                             b"PING\r\n", b"GET nothing\r\n")  # fmt: skip
        assert replies == [b"+OK\r\n", b"$1\r\nv\r\n", b"-ERR value is not an integer or out "
                           b"of range\r\n", b"+PONG\r\n", b"$-1\r\n"]  # fmt: skip
        ups.close()

    run(main())
    # SELECT from the URL's /3 went first: the key is in database 3.
    assert redis.Redis(host=LOOPBACK, port=server.port, db=3).get("k") == b"v"


def test_auth_from_the_url(procs: ProcessGroup) -> None:
    port = free_port()
    argv = [require_binary("redis-server"), "--bind", LOOPBACK, "--port", str(port),
            "--save", "", "--requirepass", "pw"]  # fmt: skip
    procs.spawn("redis", argv, port).wait_port()

    async def main() -> None:
        good, _ = upstreams([f"redis://:pw@{LOOPBACK}:{port}/0"])
        assert await call(good, b"k", b"PING\r\n") == [b"+PONG\r\n"]
        bad, metrics = upstreams([f"redis://:wrong@{LOOPBACK}:{port}/0"])
        (reply,) = await call(bad, b"k", b"PING\r\n")
        assert isinstance(reply, BackendProtocolError)
        assert "AUTH refused" in reply.detail
        assert "wrong" not in reply.detail
        assert metrics.backend_errors.labels(reply.backend, "redis", "protocol").value == 1

    run(main())


def test_a_dead_backend_fails_at_once_then_backs_off(procs: ProcessGroup) -> None:
    port = free_port()  # nothing listens

    async def main() -> None:
        ups, metrics = upstreams([f"redis://{LOOPBACK}:{port}/0?name=gone"])
        (first,) = await call(ups, b"k", b"PING\r\n")
        assert isinstance(first, BackendUnavailable)
        assert "connect failed" in first.detail
        (second,) = await call(ups, b"k", b"PING\r\n")
        assert isinstance(second, BackendUnavailable)
        assert "in reconnect backoff" in second.detail
        upstream = ups.route(b"k")
        assert upstream is not None
        upstream.write(b"SET k v\r\n")  # no reply expected, and dropped
        # Every operation that failed counts, refusals in the backoff window included.
        assert metrics.backend_errors.labels("gone", "redis", "unavailable").value == 3

    run(main())


def test_a_stopped_backend_times_out_every_waiting_request(procs: ProcessGroup) -> None:
    server = procs.redis()

    async def main() -> None:
        ups, metrics = upstreams([f"redis://{LOOPBACK}:{server.port}/0?name=stuck"])
        assert await call(ups, b"k", b"PING\r\n") == [b"+PONG\r\n"]
        server.stop()
        try:
            started = asyncio.get_running_loop().time()
            replies = await call(ups, b"k", *[b"PING\r\n"] * 20)
            elapsed = asyncio.get_running_loop().time() - started
        finally:
            server.cont()
        assert all(isinstance(r, BackendTimeout) for r in replies), replies
        assert len({id(r) for r in replies}) == 1  # one failure, shared by all
        assert metrics.backend_errors.labels("stuck", "redis", "timeout").value == 20
        assert 0.4 < elapsed < 3.0
        # The backend is back: after the backoff window, requests go through again.
        await asyncio.sleep(SETTINGS.reconnect_backoff_max)
        assert await call(ups, b"k", b"PING\r\n") == [b"+PONG\r\n"]

    run(main())


def test_a_reply_waiting_when_a_stalled_worker_resumes_is_not_a_timeout(
    procs: ProcessGroup,
) -> None:
    """The fault is the stall itself: the worker is held back past the request timeout
    while handling another socket's event, and the reply arrives meanwhile. uvloop then
    runs its due timers before it polls the sockets again, so the watchdog finds the request
    overdue before the loop has read the reply that is waiting for it."""
    slow, other = procs.redis(), procs.redis()

    async def main() -> None:
        slow_ups, _ = upstreams([f"redis://{LOOPBACK}:{slow.port}/0"])
        other_ups, _ = upstreams([f"redis://{LOOPBACK}:{other.port}/0"])
        assert await call(slow_ups, b"k", b"PING\r\n") == [b"+PONG\r\n"]
        assert await call(other_ups, b"k", b"PING\r\n") == [b"+PONG\r\n"]
        slow_upstream, other_upstream = slow_ups.route(b"k"), other_ups.route(b"k")
        assert slow_upstream is not None
        assert other_upstream is not None
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        stalled = loop.create_future()

        def stall(_: Any) -> None:
            # Runs as the other socket is read: the slow backend answers while the worker
            # is held back here.
            slow.cont()
            time.sleep(SETTINGS.request_timeout * 2)
            stalled.set_result(None)

        slow.stop()
        try:
            slow_upstream.send(b"ECHO late\r\n", reply.set_result)
            other_upstream.send(b"PING\r\n", stall)
            await stalled
        finally:
            slow.cont()
        assert await reply == b"$4\r\nlate\r\n"
        slow_ups.close()
        other_ups.close()

    run(main())


def test_a_killed_backend_fails_the_requests_in_flight(procs: ProcessGroup) -> None:
    server = procs.redis()

    async def main() -> None:
        ups, _ = upstreams([f"redis://{LOOPBACK}:{server.port}/0?name=killed"])
        assert await call(ups, b"k", b"PING\r\n") == [b"+PONG\r\n"]
        upstream = ups.route(b"k")
        assert upstream is not None
        loop = asyncio.get_running_loop()
        blocked = loop.create_future()
        upstream.send(b"BLPOP nothing 10\r\n", blocked.set_result)
        await asyncio.sleep(0.1)
        server.kill()
        reply: BackendError = await asyncio.wait_for(blocked, 5)
        assert isinstance(reply, BackendUnavailable)

    run(main())


def test_a_pool_of_the_other_protocol_routes_nowhere_and_says_why() -> None:
    async def main() -> None:
        ups, _ = upstreams([f"memcached://{LOOPBACK}:11211"], protocol="redis")
        assert ups.route(b"k") is None
        assert ups.mismatch == "the pool's backends speak memcached, not redis"

    run(main())
