"""Cache key rules: memcached's, since every backend must accept every key we route, plus
the namespace the HTTP cache keeps for itself."""

from __future__ import annotations

MAX_KEY_BYTES = 250
# Space and ASCII control bytes end a key in memcached's text protocol. Bytes >= 0x80 are
# fine there and in redis.
_FORBIDDEN = bytes(range(0x21)) + b"\x7f"

CACHE_PREFIX = b"rlhc:"
LEASE_PREFIX = b"rlhl:"
RESERVED_PREFIXES = (CACHE_PREFIX, LEASE_PREFIX)
"""The HTTP cache's slots and leases. Client keys never start with these: a client that
could write one could poison the answer every HTTP client gets for a URL."""


def key_problem(key: bytes) -> str | None:
    """Why `key` cannot be used, or None if it can."""
    if not key:
        return "key is empty"
    if len(key) > MAX_KEY_BYTES:
        return f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}"
    if len(key.translate(None, _FORBIDDEN)) != len(key):
        return "key contains a space or a control byte"
    if key.startswith(RESERVED_PREFIXES):
        return f"keys starting with {key[:5].decode()!r} are reserved for the HTTP cache"
    return None
