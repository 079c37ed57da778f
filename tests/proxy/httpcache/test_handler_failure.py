"""Requirement 8: the cache tier is never a reason for a 5xx. Also the redis backend."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.proxy.httpcache.conftest import start_proxy
from tests.support.origins import selected_kinds, start_origin
from tests.support.servers import LOOPBACK, ProcessGroup, memcached_url, redis_url

CLIENTS = 16
# Answers to requests sent after the fault: every one of them must come from the origin.
AFTER_FAULT = 100
DEADLINE = 30.0  # for the first hit, and for AFTER_FAULT answers: bounds, not expectations


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # time.monotonic() as the request was sent
    status: int
    x_cache: str


class Load:
    """CLIENTS concurrent clients GETting random ones of `keys` paths until stopped.

    The fault's time is set once both cache servers are signalled; the classification by
    send time, not by the load's schedule, is what keeps a slow machine from counting a
    request sent before the fault (a legitimate HIT) as one sent after it.
    """

    def __init__(self, url: str, keys: int, seed: int) -> None:
        self.url = url
        self.keys = keys
        self.rng = random.Random(seed)
        self.answers: list[Answer] = []
        self.fault_at = math.inf
        self.hit = asyncio.Event()
        self.answered_after_fault = asyncio.Event()
        self._after_fault = 0
        self._stop = False
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:

            async def one_client() -> None:
                while not self._stop:
                    sent = time.monotonic()
                    response = await client.get(f"{self.url}/hot/{self.rng.randrange(self.keys)}")
                    self._record(Answer(sent, response.status_code,
                                        response.headers.get("x-cache", "")))  # fmt: skip

            await asyncio.gather(*(one_client() for _ in range(CLIENTS)))

    def _record(self, answer: Answer) -> None:
        self.answers.append(answer)
        if answer.x_cache == "HIT":
            self.hit.set()
        if answer.sent >= self.fault_at:
            self._after_fault += 1
            if self._after_fault >= AFTER_FAULT:
                self.answered_after_fault.set()

    async def until(self, event: asyncio.Event, what: str) -> None:
        """Waits for `event`, failing at DEADLINE or as soon as the load itself fails."""
        assert self._task is not None
        waiter = asyncio.ensure_future(event.wait())
        either: set[asyncio.Future[Any]] = {waiter, self._task}
        done, _ = await asyncio.wait(either, timeout=DEADLINE,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        waiter.cancel()
        if self._task in done:
            self._task.result()  # raises what ended the load
        if waiter not in done:
            raise TimeoutError(f"timed out after {DEADLINE:g}s waiting for {what}")

    async def stop(self) -> list[Answer]:
        assert self._task is not None
        self._stop = True
        await self._task
        return self.answers


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

    async def run() -> tuple[list[Answer], float]:
        load = Load(proxy.url, 20, seed)
        load.start()
        await load.until(load.hit, "a cache hit before the fault")
        # One backend dies outright; the other hangs, so its requests time out.
        killed.kill()
        stopped.stop()
        load.fault_at = time.monotonic()
        await load.until(load.answered_after_fault, f"{AFTER_FAULT} answers after the fault")
        answers = await load.stop()
        stopped.cont()
        return answers, load.fault_at

    answers, fault_at = asyncio.run(run())
    before = Counter(a.x_cache for a in answers if a.sent < fault_at)
    after = Counter(a.x_cache for a in answers if a.sent >= fault_at)
    print(f"before fault: {dict(before)}; after: {dict(after)}")
    assert Counter(a.status for a in answers) == {200: len(answers)}
    assert before["HIT"] > 0
    # After the fault nothing comes from the cache: the origin answers every request.
    assert sum(after.values()) >= AFTER_FAULT
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
