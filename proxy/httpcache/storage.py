"""Entries, variant indexes, pass markers and leases in the memcached/redis pool,
sharded by the ring (slot.py describes what a URI's slot holds).

Backend keys are digests of canonical cache keys (proxy.httpcache.key): a key may be
longer than memcached's 250 bytes and holds spaces. Every backend key starts with one of
RESERVED_PREFIXES, which the KV API refuses, so no KV client can write, read or lease a
cache slot.

A lease lives on the backend that owns the URI's slot (it is routed by the slot's
digest), so `add` on it is a fleet-wide compare-and-set for "who fetches this key".

Every backend failure degrades here: a read that fails is a miss, a write that fails is
dropped. The caller never sees BackendError, so the cache tier is never a reason for a
5xx (docs/invariants.md, invariant 9).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import math

from proxy.keys import CACHE_PREFIX, LEASE_PREFIX
from proxy.metrics import ProxyMetrics
from proxy.router import Route, Router
from ringleader.backends import BackendError
from ringleader.backends.errors import BackendRejected

from .decoded import DecodedEntries
from .entry import Entry, UnreadableEntry, encode_entry
from .freshness import freshness_lifetime
from .headers import Headers, first
from .policy import CachePolicy
from .slot import (
    INDEX_MAGIC,
    PASS,
    PASS_MARKER,
    PassMarker,
    UnreadableSlot,
    VariantIndex,
    decode_index,
    encode_index,
    variant_key,
    variant_of,
)
from .vary import vary_record

# memcached reads an exptime above 30 days as an absolute time; the store never needs more.
MAX_TTL = 30 * 24 * 3600
REVALIDATION_KEEP = 3600
"""Seconds an entry with a validator (ETag, Last-Modified) outlives its freshness and
stale windows, so that it can still be revalidated with a cheap 304 (or served under a
client's max-stale) instead of being fetched whole."""

Slot = Entry | VariantIndex | PassMarker | None
"""What a URI key's slot holds; None: nothing (or nothing readable, or no backend)."""


@functools.lru_cache(maxsize=4096)
def digest(key: bytes) -> bytes:
    """The name of ``key``'s slot: a 128-bit BLAKE2b in unpadded base64url, 22 bytes that
    memcached accepts. Short, because the ring hashes it byte by byte on every lookup."""
    return base64.urlsafe_b64encode(hashlib.blake2b(key, digest_size=16).digest())[:22]


def retention(entry: Entry, now: float, policy: CachePolicy) -> int:
    """The backend TTL for ``entry``: its remaining freshness, plus its stale windows,
    plus REVALIDATION_KEEP if it has a validator; at least 1 s, at most MAX_TTL."""
    cc = entry.cache_control
    lifetime = freshness_lifetime(
        entry.status, entry.headers, cc, entry.response_time, policy.heuristic_cap
    )
    ttl = max(lifetime - entry.age_at(now), 0.0)
    ttl += max(cc.stale_while_revalidate or 0, cc.stale_if_error or 0)
    if first(entry.headers, b"etag") is not None or first(entry.headers, b"last-modified"):
        ttl += REVALIDATION_KEEP
    return max(1, min(math.ceil(ttl), MAX_TTL))


class EntryStore:
    def __init__(self, router: Router, metrics: ProxyMetrics, max_variants: int) -> None:
        self._router = router
        self._metrics = metrics
        self._max_variants = max_variants
        self._decoded = DecodedEntries()
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

    async def lookup(self, key: bytes) -> Slot:
        """What ``key``'s slot holds."""
        slot = digest(key)
        data = await self._read(slot)
        if data is None:
            return None
        try:
            if data.startswith(INDEX_MAGIC):
                index: Slot = decode_index(data)
                return index
            if data == PASS_MARKER:
                return PASS
            return self._decoded.decode(slot, data)
        except (UnreadableEntry, UnreadableSlot):
            # Another format version, or corrupted: a miss, and the next store overwrites it.
            self._lookups["unreadable"].inc()
            return None

    async def variant(self, key: bytes, index: VariantIndex, view: Headers) -> Entry | None:
        """The variant of ``key`` that the request (as forwarded) selects, if stored."""
        variant = variant_of(vary_record(index.names, view))
        slot = digest(variant_key(key, index, variant))
        data = await self._read(slot)
        if data is None:
            return None
        try:
            return self._decoded.decode(slot, data)
        except UnreadableEntry:
            self._lookups["unreadable"].inc()
            return None

    async def _read(self, slot: bytes) -> bytes | None:
        route = self._route(slot)
        if route is None:
            self._lookups["error"].inc()
            return None
        try:
            data = await route.client.get(CACHE_PREFIX + slot)
        except BackendError as exc:
            self._failed(route, "get", exc)
            self._lookups["error"].inc()
            return None
        self._lookups["miss" if data is None else "hit"].inc()
        return data

    async def put(self, key: bytes, entry: Entry, ttl: int, head: Slot) -> bool:
        """Store ``entry`` for ``ttl`` seconds (>= 1); False if it was not stored.
        ``head`` is what lookup() found in the slot: a varying entry joins its index (or
        starts a new one), pushing out the oldest variant past max_variants."""
        names = tuple(name for name, _ in entry.vary)
        if not names:
            stored = await self._write(digest(key), encode_entry(entry), ttl, count=True)
            if stored and isinstance(head, VariantIndex):
                await self._drop(head.variants)
            return stored
        index = head if isinstance(head, VariantIndex) and head.names == names else None
        if index is None:
            if isinstance(head, VariantIndex):
                await self._drop(head.variants)
            index = VariantIndex.new(names)
        slot = digest(variant_key(key, index, variant_of(entry.vary)))
        if not await self._write(slot, encode_entry(entry), ttl, count=True):
            return False
        index, evicted = index.with_variant(slot, self._max_variants)
        await self._drop(evicted)
        # The index goes last: a reader that finds it finds the variant (or a miss).
        return await self._write(digest(key), encode_index(index), MAX_TTL, count=False)

    async def mark_pass(self, key: bytes, ttl: int) -> None:
        """Hit-for-pass for ``ttl`` seconds: requests for ``key`` go straight to the origin."""
        await self._write(digest(key), PASS_MARKER, ttl, count=False)

    async def _write(self, slot: bytes, value: bytes, ttl: int, count: bool) -> bool:
        route = self._route(slot)
        if route is None:
            if count:
                self._stores["error"].inc()
            return False
        ttl = self._router.table.write_ttl(slot, route, min(ttl, MAX_TTL))
        try:
            await route.client.set(CACHE_PREFIX + slot, value, ttl)
        except BackendRejected:
            # Over the backend's item size once headers are added: served, not stored.
            if count:
                self._stores["rejected"].inc()
            return False
        except BackendError as exc:
            self._failed(route, "set", exc)
            if count:
                self._stores["error"].inc()
            return False
        if count:
            self._stores["stored"].inc()
        return True

    async def delete(self, key: bytes) -> bool | None:
        """Drop ``key``'s slot and every variant it lists: True if it held something,
        None on failure."""
        slot = digest(key)
        head = await self.lookup(key)
        if isinstance(head, VariantIndex):
            await self._drop(head.variants)
        return await self._delete(slot)

    async def _drop(self, slots: tuple[bytes, ...]) -> None:
        for slot in slots:
            await self._delete(slot)

    async def _delete(self, slot: bytes) -> bool | None:
        route = self._route(slot)
        if route is None:
            return None
        try:
            return await route.client.delete(CACHE_PREFIX + slot)
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
        """Whether someone in the fleet holds ``key``'s lease (False if unknown). Its
        value is one byte: waiters poll this, never the entry they wait for."""
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
