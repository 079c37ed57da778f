"""twemproxy's `hash_tag`: hash only the part of a key between two tag characters.

`nc_server.c` (`server_pool_idx`): find the first opening tag; find the first closing tag
after it; if both are there with at least one byte between them, hash those bytes, else
hash the whole key. Keys sharing a tagged part land on the same server.
"""

from __future__ import annotations

from collections.abc import Callable

TAG_LENGTH = 2


def parse_hash_tag(text: str) -> bytes:
    """The tag as bytes; ValueError unless `text` is exactly two ASCII characters.

    twemproxy compares single bytes, so a character that takes several bytes cannot be a tag.
    """
    if len(text) != TAG_LENGTH or not text.isascii():
        raise ValueError(
            f'expected two ASCII characters, the opening and closing tag (like "{{}}"), '
            f"got {text!r}"
        )
    return text.encode("ascii")


def hashed_part(key: bytes, tag: bytes) -> bytes:
    """The bytes of `key` that the ring hashes under `tag` (two bytes, opening and closing)."""
    start = key.find(tag[0])
    if start < 0:
        return key
    end = key.find(tag[1], start + 1)
    # An empty tag (`{}`) does not count: twemproxy hashes the whole key then.
    if end <= start + 1:
        return key
    return key[start + 1 : end]


def tagged(key_hash: Callable[[bytes], int], tag: bytes) -> Callable[[bytes], int]:
    """`key_hash` applied to the tagged part of each key."""

    def hash_tagged(key: bytes) -> int:
        return key_hash(hashed_part(key, tag))

    return hash_tagged
