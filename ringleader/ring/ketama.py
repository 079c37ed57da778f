"""Ketama, bit-compatible with twemproxy's `distribution: ketama` (`nc_ketama.c`).

libmemcached's weighted ketama under md5 builds the same continuum, so a fleet shared with
either keeps every key on the same server.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache
from hashlib import md5

from ringleader.backend_url import BackendSpec
from ringleader.ring.hashes import KEY_HASHES
from ringleader.ring.hashtag import tagged

POINTS_PER_SERVER = 160
POINTS_PER_HASH = 4
# Key hashes each ring remembers, for every caller (KV, HTTP cache, native fronts): the key
# hashes are Python loops costing microseconds, and cache traffic is mostly hot keys.
# A few MB per ring at most.
HASH_MEMO = 32_768

_F32 = struct.Struct("<f")
_WORDS = struct.Struct("<4I")


def _f32(x: float) -> float:
    """Round to IEEE binary32, as a C `float` expression does on x86-64 (SSE)."""
    return float(_F32.unpack(_F32.pack(x))[0])


def points_per_server(weight: int, total_weight: int, live_servers: int) -> int:
    """nc_ketama.c: `floorf(pct * 160 / 4 * nlive + 0.0000000001) * 4`, in float32.

    The float32 rounding is why equal weights give 156 points instead of 160 for some pool
    sizes (25, 47, 50, ...); getting it wrong moves keys relative to twemproxy.
    """
    pct = _f32(_f32(weight) / _f32(total_weight))
    scaled = _f32(_f32(_f32(pct * POINTS_PER_SERVER) / 4) * _f32(live_servers))
    # The 1e-10 literal is a double, so the sum is computed in double, then narrowed.
    return math.floor(_f32(scaled + 0.0000000001)) * 4


class KetamaRing:
    """An immutable ketama continuum over `backends`, in configuration order.

    With `hash_tag` (two bytes, as from `parse_hash_tag`), every lookup hashes only the
    tagged part of the key, as twemproxy's `hash_tag` does (ringleader/ring/hashtag.py).
    """

    __slots__ = ("_backends", "_hash", "_hash_name", "_hash_tag", "_owners", "_points")

    def __init__(
        self,
        backends: Sequence[BackendSpec],
        hash_name: str = "fnv1a_64",
        hash_tag: bytes | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a ring needs at least one backend")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate backend name in {names}")
        try:
            self._hash = KEY_HASHES[hash_name]
        except KeyError:
            raise ValueError(
                f"unknown hash {hash_name!r}; choose one of {', '.join(KEY_HASHES)}"
            ) from None
        if hash_tag is not None:
            if len(hash_tag) != 2:
                raise ValueError(f"a hash tag is two bytes, got {hash_tag!r}")
            self._hash = tagged(self._hash, hash_tag)
        # Hot keys are looked up again and again, and the key hashes are pure-Python loops.
        self._hash = lru_cache(maxsize=HASH_MEMO)(self._hash)
        self._hash_name = hash_name
        self._hash_tag = hash_tag
        self._backends = tuple(backends)
        total_weight = sum(b.weight for b in backends)
        continuum: list[tuple[int, int]] = []
        for index, backend in enumerate(backends):
            pps = points_per_server(backend.weight, total_weight, len(backends))
            for point in range(pps // POINTS_PER_HASH):
                digest = md5(f"{backend.name}-{point}".encode()).digest()
                continuum.extend((value, index) for value in _WORDS.unpack(digest))
        # twemproxy qsorts by value alone; glibc's qsort is a stable merge sort, so equal
        # values keep server order. Python's sort on the value key is stable the same way.
        continuum.sort(key=lambda item: item[0])
        self._points = [value for value, _ in continuum]
        self._owners = [self._backends[index] for _, index in continuum]

    @property
    def backends(self) -> tuple[BackendSpec, ...]:
        return self._backends

    @property
    def hash_name(self) -> str:
        return self._hash_name

    @property
    def hash_tag(self) -> bytes | None:
        return self._hash_tag

    @property
    def point_count(self) -> int:
        return len(self._points)

    def continuum(self) -> list[tuple[int, BackendSpec]]:
        """Every point of the circle in order, with its owner: what lookups search."""
        return list(zip(self._points, self._owners, strict=True))

    def lookup(self, key: bytes) -> BackendSpec:
        # ketama_dispatch: the first point >= hash, wrapping past the end.
        i = bisect_left(self._points, self._hash(key))
        return self._owners[i if i < len(self._owners) else 0]

    def locate(self, key: bytes) -> tuple[int, int, BackendSpec]:
        """(key hash, the continuum point chosen, its owner): `lookup`, explained."""
        key_hash = self._hash(key)
        i = bisect_left(self._points, key_hash)
        i = i if i < len(self._points) else 0
        return key_hash, self._points[i], self._owners[i]

    def replicas(self, key: bytes, n: int) -> list[BackendSpec]:
        want = min(n, len(self._backends))
        if want <= 0:
            return []
        start = bisect_left(self._points, self._hash(key))
        found: list[BackendSpec] = []
        total = len(self._owners)
        for step in range(total):
            owner = self._owners[(start + step) % total]
            if owner not in found:
                found.append(owner)
                if len(found) == want:
                    break
        return found
