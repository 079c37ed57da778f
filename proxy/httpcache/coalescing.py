"""Request coalescing: one origin fetch per key in a worker, about one in the fleet.

In a worker, the first request for a key that must go to the origin leads a flight; the
others follow it and get the entry it stored (or None: not storable, too large, failed).
Across workers and proxies, the leader first takes a lease in the backend that owns the
key (add-if-absent with a TTL, as Facebook's memcache leases). A request that finds the
lease held polls the backend for the entry instead of fetching.

Both waits are bounded by ``wait`` seconds: a follower whose leader is slow or gone goes
to the origin itself, so coalescing can delay a request but never strand it.
"""

from __future__ import annotations

import asyncio
import time

from .entry import Entry
from .storage import EntryStore

# Fleet followers poll the owning backend, backing off from POLL_FIRST to POLL_MAX.
POLL_FIRST = 0.005
POLL_MAX = 0.05


class Flights:
    """In-worker singleflight keyed by cache key."""

    def __init__(self) -> None:
        self._flights: dict[bytes, asyncio.Future[Entry | None]] = {}

    def lead(self, key: bytes) -> asyncio.Future[Entry | None] | None:
        """A new flight for ``key``, or None if one is already in the air."""
        if key in self._flights:
            return None
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        return flight

    def in_flight(self, key: bytes) -> asyncio.Future[Entry | None] | None:
        return self._flights.get(key)

    def land(self, key: bytes, flight: asyncio.Future[Entry | None], entry: Entry | None) -> None:
        """End ``flight``, handing ``entry`` to its followers. Idempotent."""
        if not flight.done():
            flight.set_result(entry)
        if self._flights.get(key) is flight:
            del self._flights[key]


async def follow(flight: asyncio.Future[Entry | None], wait: float) -> Entry | None:
    """The leader's entry, or None if it stored none within ``wait`` seconds."""
    try:
        return await asyncio.wait_for(asyncio.shield(flight), wait)
    except TimeoutError:
        return None


async def await_fleet_fill(
    store: EntryStore, key: bytes, wait: float, replacing: Entry | None
) -> Entry | None:
    """The entry another proxy's lease holder stores (newer than ``replacing``, the stale
    entry being revalidated, if any), or None once the lease is gone without one or
    ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    delay = POLL_FIRST
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_MAX)
        entry = _newer(await store.get(key), replacing)
        if entry is not None:
            return entry
        if not await store.lease_held(key):
            # The holder stores before it releases, so one more read settles it: an
            # entry, or none (not storable, too large, origin failed, lease expired).
            return _newer(await store.get(key), replacing)


def _newer(entry: Entry | None, replacing: Entry | None) -> Entry | None:
    if entry is None or replacing is None or entry.response_time > replacing.response_time:
        return entry
    return None
