"""Requirement 8: the cache tier is never a reason for a 5xx. Also the redis backend."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter

import httpx
import pytest

from tests.proxy.httpcache.conftest import start_proxy
from tests.support.origins import selected_kinds, start_origin
from tests.support.servers import LOOPBACK, ProcessGroup, memcached_url, redis_url

LOAD_SECONDS = 3.0
FAULT_AT = 1.0
CLIENTS = 16


async def load(
    url: str, keys: int, seed: int, on_fault: asyncio.Event
) -> list[tuple[float, int, str]]:
    """(time, status, x-cache) of every request from CLIENTS concurrent clients."""
    rng = random.Random(seed)
    results: list[tuple[float, int, str]] = []
    started = time.monotonic()
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def one_client() -> None:
            while (now := time.monotonic() - started) < LOAD_SECONDS:
                if now >= FAULT_AT and not on_fault.is_set():
                    on_fault.set()
                response = await client.get(f"{url}/hot/{rng.randrange(keys)}")
                results.append((now, response.status_code, response.headers.get("x-cache", "")))

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return results


@pytest.mark.parametrize("kind", selected_kinds())
def test_killing_the_cache_servers_under_load_gives_only_origin_200s(
    procs: ProcessGroup, kind: str
) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    origin = start_origin(procs, kind)
    origin.configure("hot", headers=[["cache-control", "max-age=60"]])
    killed, stopped = procs.memcached(), procs.memcached()
    proxy = start_proxy(procs, [memcached_url(killed), memcached_url(stopped)], origin)

    async def run() -> list[tuple[float, int, str]]:
        fault = asyncio.Event()
        loader = asyncio.ensure_future(load(proxy.url, 20, seed, fault))
        await fault.wait()
        # One backend dies outright; the other hangs, so its requests time out.
        killed.kill()
        stopped.stop()
        fault_time = time.monotonic()
        results = await loader
        stopped.cont()
        print(f"fault injected; {time.monotonic() - fault_time:.1f}s of load after it")
        return results

    results = asyncio.run(run())
    before = Counter(x for t, _, x in results if t < FAULT_AT)
    after = Counter(x for t, _, x in results if t >= FAULT_AT + 0.1)
    print(f"before fault: {dict(before)}; after: {dict(after)}")
    assert Counter(status for _, status, _ in results) == {200: len(results)}
    assert before["HIT"] > 0
    # After the fault nothing comes from the cache: the origin answers every request.
    assert after
    assert set(after) == {"MISS"}
    assert proxy.process.alive()


@pytest.mark.parametrize("kind", selected_kinds())
def test_redis_backend_stores_and_serves_entries(procs: ProcessGroup, kind: str) -> None:
    origin = start_origin(procs, kind)
    origin.configure("r", headers=[["cache-control", "max-age=60"]])
    redis = procs.redis()
    proxy = start_proxy(procs, [redis_url(redis, db=3)], origin)
    assert httpx.get(f"{proxy.url}/r").headers["x-cache"] == "MISS"
    hit = httpx.get(f"{proxy.url}/r")
    assert (hit.headers["x-cache"], hit.text) == ("HIT", "body of r")
    with socket.create_connection((LOOPBACK, redis.port), timeout=5) as sock:
        sock.sendall(b"SELECT 3\r\nKEYS rlhc:*\r\n")
        time.sleep(0.1)
        reply = sock.recv(4096)
    assert reply.startswith(b"+OK\r\n*1\r\n")
    assert origin.count("r") == 1
