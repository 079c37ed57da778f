"""Entries and leases in the memcached/redis pool, sharded by the ring.

Backend keys are digests of the canonical cache key (proxy.httpcache.key): a key may
be longer than memcached's 250 bytes and holds spaces. There is one slot per URI key
(the policy stores one variant per key, and HEAD shares GET's key), so deleting that
slot removes every variant: PURGE and invalidation need no variant index.

A lease lives on the backend that owns the entry (it is routed by the entry's
digest), so `add` on it is a fleet-wide compare-and-set for "who fetches this key".

Every backend failure degrades here: a read that fails is a miss, a write that fails is
dropped. The caller never sees BackendError, so the cache tier is never a reason for a
5xx (DESIGN.md, data flow 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import math

from proxy.backends import BackendError
from proxy.backends.errors import BackendRejected
from proxy.metrics import ProxyMetrics
from proxy.router import Route, Router

from .age import entry_age
from .cache_control import parse_cache_control
from .entry import Entry, UnreadableEntry, decode_entry, encode_entry
from .freshness import freshness_lifetime
from .headers import first
from .policy import CachePolicy

ENTRY_PREFIX = b"rlhc:"
LEASE_PREFIX = b"rlhl:"
# memcached reads an exptime above 30 days as an absolute time; the store never needs more.
MAX_TTL = 30 * 24 * 3600
REVALIDATION_KEEP = 3600
"""Seconds an entry with a validator (ETag, Last-Modified) outlives its freshness and
stale windows, so that it can still be revalidated with a cheap 304 (or served under a
client's max-stale) instead of being fetched whole."""


def digest(key: bytes) -> bytes:
    """The hex digest naming ``key``'s slot: 40 bytes, legal for memcached."""
    return hashlib.blake2b(key, digest_size=20).hexdigest().encode()


def retention(entry: Entry, now: float, policy: CachePolicy) -> int:
    """The backend TTL for ``entry``: its remaining freshness, plus its stale windows,
    plus REVALIDATION_KEEP if it has a validator; at least 1 s, at most MAX_TTL."""
    cc = parse_cache_control(entry.headers)
    lifetime = freshness_lifetime(
        entry.status, entry.headers, cc, entry.response_time, policy.heuristic_cap
    )
    ttl = max(lifetime - entry_age(entry, now), 0.0)
    ttl += max(cc.stale_while_revalidate or 0, cc.stale_if_error or 0)
    if first(entry.headers, b"etag") is not None or first(entry.headers, b"last-modified"):
        ttl += REVALIDATION_KEEP
    return max(1, min(math.ceil(ttl), MAX_TTL))


class EntryStore:
    def __init__(self, router: Router, metrics: ProxyMetrics, failover_ttl: int) -> None:
        self._router = router
        self._metrics = metrics
        self._failover_ttl = failover_ttl
        self._lookups = {
            result: metrics.cache_lookups.labels("http", result)
            for result in ("hit", "miss", "error", "unreadable")
        }
        self._stores = {
            result: metrics.http_cache_stores.labels(result)
            for result in ("stored", "rejected", "error")
        }

    def _route(self, slot: bytes) -> Route | None:
        """The owning backend; None while the pool's ring is empty, which every method
        treats like an unreachable backend."""
        return self._router.table.route(slot)

    async def get(self, key: bytes) -> Entry | None:
        """The entry stored under ``key``; None when absent, unreadable or unreachable."""
        slot = digest(key)
        route = self._route(slot)
        if route is None:
            self._lookups["error"].inc()
            return None
        try:
            data = await route.client.get(ENTRY_PREFIX + slot)
        except BackendError as exc:
            self._failed(route, "get", exc)
            self._lookups["error"].inc()
            return None
        if data is None:
            self._lookups["miss"].inc()
            return None
        try:
            entry = decode_entry(data)
        except UnreadableEntry:
            # An entry from another format version, or corrupted: a miss, and the next
            # store overwrites it.
            self._lookups["unreadable"].inc()
            return None
        self._lookups["hit"].inc()
        return entry

    async def put(self, key: bytes, entry: Entry, ttl: int) -> bool:
        """Store ``entry`` for ``ttl`` seconds (>= 1); False if it was not stored."""
        slot = digest(key)
        route = self._route(slot)
        if route is None:
            self._stores["error"].inc()
            return False
        ttl = min(ttl, MAX_TTL)
        if self._router.table.is_failover(slot, route):
            # DESIGN.md invariant 3: an entry parked away from its down owner is short-lived.
            ttl = min(ttl, self._failover_ttl)
            self._metrics.failover_writes.labels(route.spec.name).inc()
        try:
            await route.client.set(ENTRY_PREFIX + slot, encode_entry(entry), ttl)
        except BackendRejected:
            # Over the backend's item size once headers are added: served, not stored.
            self._stores["rejected"].inc()
            return False
        except BackendError as exc:
            self._failed(route, "set", exc)
            self._stores["error"].inc()
            return False
        self._stores["stored"].inc()
        return True

    async def delete(self, key: bytes) -> bool | None:
        """Drop ``key``'s slot (all its variants): True if it existed, None on failure."""
        slot = digest(key)
        route = self._route(slot)
        if route is None:
            return None
        try:
            return await route.client.delete(ENTRY_PREFIX + slot)
        except BackendError as exc:
            self._failed(route, "delete", exc)
            return None

    async def acquire_lease(self, key: bytes, ttl: int) -> Lease | None:
        """The fleet-wide right to fetch ``key`` for ``ttl`` seconds, or None if another
        request in the fleet holds it. A backend failure grants a lease that is not
        held anywhere: without a shared tier there is nothing to coordinate."""
        slot = digest(key)
        route = self._route(slot)
        if route is None:
            return Lease(None, slot)
        try:
            acquired = await route.client.add(LEASE_PREFIX + slot, b"1", ttl)
        except BackendError as exc:
            self._failed(route, "add", exc)
            return Lease(None, slot)
        return Lease(route, slot) if acquired else None

    async def lease_held(self, key: bytes) -> bool:
        """Whether someone in the fleet holds ``key``'s lease (False if unknown)."""
        slot = digest(key)
        route = self._route(slot)
        if route is None:
            return False
        try:
            return await route.client.get(LEASE_PREFIX + slot) is not None
        except BackendError as exc:
            self._failed(route, "get", exc)
            return False

    def _failed(self, route: Route, op: str, exc: BackendError) -> None:
        self._metrics.backend_errors.labels(route.spec.name, op, exc.kind).inc()


class Lease:
    """A held lease is released by deleting it; one not released expires by its TTL.

    Leases carry no owner token: a holder that outlives its TTL may delete a successor's
    lease. That costs at most one extra origin fetch, never a wrong answer."""

    __slots__ = ("_route", "_slot")

    def __init__(self, route: Route | None, slot: bytes) -> None:
        self._route = route  # None: granted without a backend, nothing to release
        self._slot = slot

    async def release(self) -> None:
        route, self._route = self._route, None
        if route is None:
            return
        with contextlib.suppress(BackendError):  # else it expires by its TTL
            await route.client.delete(LEASE_PREFIX + self._slot)
