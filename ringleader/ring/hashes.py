"""Key hashes, bit-compatible with twemproxy's hashkit (`src/hashkit/nc_*.c`)."""

from __future__ import annotations

from collections.abc import Callable
from hashlib import md5 as _md5

KeyHash = Callable[[bytes], int]

_MASK32 = 0xFFFFFFFF
# nc_fnv.c: the 64-bit FNV constants, truncated to 32 bits by `(uint32_t)` casts.
_FNV_64_INIT_32 = 0xCBF29CE484222325 & _MASK32
_FNV_64_PRIME_32 = 0x100000001B3 & _MASK32
# twemproxy reads key bytes as `char`, which is signed on x86: `(uint32_t)key[x]` sign-extends
# bytes >= 0x80. Precomputing the extended values keeps the loop branch-free.
_SIGNED_CHAR = tuple(b | 0xFFFFFF00 if b & 0x80 else b for b in range(256))


def fnv1a_64(key: bytes) -> int:
    """twemproxy's `hash_fnv1a_64`: despite the name, a 32-bit FNV-1a."""
    h = _FNV_64_INIT_32
    if key.isascii():
        for b in key:
            h = ((h ^ b) * _FNV_64_PRIME_32) & _MASK32
    else:
        for b in key:
            h = ((h ^ _SIGNED_CHAR[b]) * _FNV_64_PRIME_32) & _MASK32
    return h


def md5(key: bytes) -> int:
    """twemproxy's `hash_md5`: the first four digest bytes as a little-endian word."""
    return int.from_bytes(_md5(key).digest()[:4], "little")


KEY_HASHES: dict[str, KeyHash] = {"fnv1a_64": fnv1a_64, "md5": md5}
