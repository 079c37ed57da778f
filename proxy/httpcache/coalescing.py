"""Request coalescing: one origin fetch per key in a worker, about one in the fleet.

In a worker, the first request for a key that must go to the origin leads a flight; the
others follow it and get the entry it stored (or None: not storable, too large, failed).
Across workers and proxies, the leader first takes a lease in the backend that owns the
key (add-if-absent with a TTL, as Facebook's memcache leases). A request that finds the
lease held polls the lease until it is released, then reads the entry once.

Both waits are bounded by ``wait`` seconds: a follower whose leader is slow or gone goes
to the origin itself, so coalescing can delay a request but never strand it.
"""

from __future__ import annotations

import asyncio
import time

from proxy.telemetry import GaugeChild

from .entry import Entry
from .storage import EntryStore

# Fleet followers poll the owning backend, backing off from POLL_FIRST to POLL_MAX.
POLL_FIRST = 0.005
POLL_MAX = 0.05


class Flights:
    """In-worker singleflight keyed by cache key. ``waiting`` shows how many requests
    wait on another's fetch right now."""

    def __init__(self, waiting: GaugeChild) -> None:
        self._flights: dict[bytes, asyncio.Future[Entry | None]] = {}
        self._followers: dict[bytes, int] = {}
        self._waiting = waiting

    def lead(self, key: bytes) -> asyncio.Future[Entry | None] | None:
        """A new flight for ``key``, or None if one is already in the air."""
        if key in self._flights:
            return None
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        return flight

    def followed(self, key: bytes) -> bool:
        """Whether requests wait on ``key``'s flight: its leader must not abandon it."""
        return self._followers.get(key, 0) > 0

    async def follow(self, key: bytes, wait: float) -> Entry | None:
        """The entry ``key``'s flight lands with, or None if it lands with none (or none
        is in the air) within ``wait`` seconds."""
        flight = self._flights.get(key)
        if flight is None:
            return None
        self._followers[key] = self._followers.get(key, 0) + 1
        self._waiting.set(self._waiting.value + 1)
        try:
            return await asyncio.wait_for(asyncio.shield(flight), wait)
        except TimeoutError:
            return None
        finally:
            self._waiting.set(self._waiting.value - 1)
            left = self._followers[key] - 1
            if left:
                self._followers[key] = left
            else:
                del self._followers[key]

    def land(self, key: bytes, flight: asyncio.Future[Entry | None], entry: Entry | None) -> None:
        """End ``flight``, handing ``entry`` to its followers. Idempotent."""
        if not flight.done():
            flight.set_result(entry)
        if self._flights.get(key) is flight:
            del self._flights[key]


async def await_lease_release(store: EntryStore, key: bytes, wait: float) -> bool:
    """True once nobody in the fleet holds ``key``'s lease, False after ``wait`` seconds.
    Only the lease, a one-byte value, is polled: the waiter reads the slot once, after."""
    deadline = time.monotonic() + wait
    delay = POLL_FIRST
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_MAX)
        if not await store.lease_held(key):
            return True
