"""A steady write load on a cluster whose nodes come and go: the longest gap between
acknowledged writes, each write's latency, and which writes were acknowledged.

Open loop: a write is due every `every` seconds whatever happens to earlier ones, so an
outage shows as a gap and a backlog, not as a client that politely stopped asking. Each
write is retried (the same write, so a request id or a unique key makes a retry apply
once) on the next node until one acknowledges it or `give_up` passes; its latency runs from
when it was due to its acknowledgement. A 4xx other than 408 and 429 is a refusal, not an
outage: that write is given up and the refusal recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from tests.support.control_cluster import backend_url

Write = Callable[[httpx.AsyncClient, str, int], Awaitable[httpx.Response]]
RETRY_PAUSE = 0.01
# A member shutting down answers 408 (etcd's gateway: "the client connection is closing").
RETRYABLE = frozenset({408, 429})
ATTEMPT_TIMEOUT = 2.0


@dataclass
class LoadResult:
    acked: list[int] = field(default_factory=list)
    """Writes acknowledged, by number."""
    unacked: list[int] = field(default_factory=list)
    """Writes given up on (outcome unknown)."""
    latencies: list[float] = field(default_factory=list)
    due: list[float] = field(default_factory=list)
    """When each of `latencies`' writes was due, in seconds into the run."""
    acks: list[float] = field(default_factory=list)
    """When each acknowledgement arrived, in seconds into the run, in order."""
    ended: float = 0.0
    """When the last write was due, in seconds into the run."""
    refusals: list[str] = field(default_factory=list)

    def longest_gap(self, since: float = 0.0, until: float | None = None) -> tuple[float, float]:
        """The longest stretch with no write acknowledged that overlaps [since, until]
        (default: to the end), and when it ended, in seconds into the run.

        It runs from the last acknowledgement before `since` (from `since` if none) to the
        first after `until` (the end of the run if none).
        """
        end = self.ended if until is None else until
        before = [a for a in self.acks if a <= since]
        after = [a for a in self.acks if a > end]
        edges = [before[-1] if before else since]
        edges += [a for a in self.acks if since < a <= end]
        edges.append(after[0] if after else max(self.ended, edges[-1]))
        return max((b - a, b) for a, b in itertools.pairwise(edges))

    def latency_quantile(self, q: float, since: float = 0.0) -> float:
        """The q-quantile latency of the acknowledged writes due from `since` on."""
        ordered = sorted(
            lat for lat, at in zip(self.latencies, self.due, strict=True) if at >= since
        )
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class SteadyWrites:
    """Runs `write(http, url, n)` for n = 0, 1, 2, ... on its own thread and event loop."""

    def __init__(
        self, urls: Sequence[str], write: Write, every: float = 0.01, workers: int = 32,
        give_up: float = 15.0,
    ) -> None:  # fmt: skip
        self._urls = list(urls)
        self._write = write
        self._every = every
        self._workers = workers
        self._give_up = give_up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-writes")
        self._result = LoadResult()
        self._started = 0.0

    def start(self) -> SteadyWrites:
        self._started = time.monotonic()
        self._thread.start()
        return self

    @property
    def acked_count(self) -> int:
        return len(self._result.acked)

    def seconds(self) -> float:
        """Seconds into the run."""
        return time.monotonic() - self._started

    def stop(self) -> LoadResult:
        """Stops issuing writes, lets those in flight finish, and returns the result."""
        self._stop.set()
        self._thread.join(self._give_up + 10)
        self._result.acks.sort()
        return self._result

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        # One client, so one connection, per worker (a shared pool degrades with many
        # requests in flight), sharing one TLS context: each builds its own otherwise, at
        # 0.1 s apiece on a loaded machine, and the first writes would wait for them all.
        tls = ssl.create_default_context()
        clients = [
            httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT, verify=tls) for _ in range(self._workers)
        ]
        tasks = [asyncio.create_task(self._worker(client, due)) for client in clients]
        try:
            for n in itertools.count():
                if self._stop.is_set():
                    break
                at = self._started + n * self._every
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                due.put_nowait((n, time.monotonic()))
            self._result.ended = self.seconds()
            for _ in tasks:
                due.put_nowait(None)
            await asyncio.gather(*tasks)
        finally:
            for client in clients:
                await client.aclose()

    async def _worker(
        self, http: httpx.AsyncClient, due: asyncio.Queue[tuple[int, float] | None]
    ) -> None:
        while (item := await due.get()) is not None:
            n, at = item
            if await self._until_acked(http, n, at):
                now = time.monotonic()
                self._result.acks.append(now - self._started)
                self._result.acked.append(n)
                self._result.latencies.append(now - at)
                self._result.due.append(at - self._started)
            else:
                self._result.unacked.append(n)

    async def _until_acked(self, http: httpx.AsyncClient, n: int, at: float) -> bool:
        attempt = 0
        while time.monotonic() - at <= self._give_up:
            url = self._urls[(n + attempt) % len(self._urls)]
            attempt += 1
            try:
                r = await self._write(http, url, n)
            except httpx.HTTPError:
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if r.status_code == 200:
                return True
            if 400 <= r.status_code < 500 and r.status_code not in RETRYABLE:
                self._result.refusals.append(f"write {n}: {r.status_code} {r.text[:200]}")
                return False
            await asyncio.sleep(RETRY_PAUSE)
        return False


class BackendAdds:
    """Ringleader writes: write n adds the backend `w{n}` to pool `pools[n % len(pools)]`,
    under a request id of its own, so a retry applies once."""

    def __init__(self, token: str, pools: Sequence[str] = ("default",)) -> None:
        self._auth = f"Bearer {token}"
        self._run = uuid.uuid4().hex[:12]
        self.pools = list(pools)

    def pool_of(self, n: int) -> str:
        return self.pools[n % len(self.pools)]

    async def __call__(self, http: httpx.AsyncClient, url: str, n: int) -> httpx.Response:
        headers = {"authorization": self._auth, "x-request-id": f"{self._run}-{n}"}
        return await http.post(
            f"{url}/v1/pools/{self.pool_of(n)}/backends", json={"url": backend_url(f"w{n}")},
            headers=headers,
        )  # fmt: skip

    def missing(self, read: Callable[[str], set[str]], acked: Sequence[int]) -> list[int]:
        """The acknowledged writes absent from the pools as `read(pool)` (backend names)
        reports them."""
        present = {pool: read(pool) for pool in self.pools}
        return [n for n in acked if f"w{n}" not in present[self.pool_of(n)]]
