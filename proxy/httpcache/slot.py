"""What a URI's slot in the backends holds besides an entry, and the variant keys.

A URI key's slot holds one of:

- an Entry (entry.py): the response, when it varies on nothing;
- a VariantIndex: the response varies (Vary). The slot keeps the Vary names and the
  slots (storage digests) of up to ``max_variants`` variants, oldest first; each variant
  is an Entry in a slot of its own, keyed by ``variant_key``. The index's random
  generation is part of every variant key, so the variants of an index that was dropped
  (PURGE, invalidation, a new set of Vary names) are never found again, even where
  deleting them failed;
- a PassMarker: hit-for-pass. The last answer could not be stored for reasons of its
  own (no-store, private, Set-Cookie, no freshness, too large), so requests go straight
  to the origin, without waiting on another request's fetch, until the marker expires.

Every layout starts with four magic bytes and a version byte, so one GET tells them apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .vary import VaryRecord

INDEX_MAGIC = b"RLHV\x01"
PASS_MARKER = b"RLHP\x01"
GENERATION_BYTES = 8
_SEP = b"\0"


@dataclass(frozen=True, slots=True)
class VariantIndex:
    names: tuple[bytes, ...]
    generation: bytes
    variants: tuple[bytes, ...] = ()

    @classmethod
    def new(cls, names: tuple[bytes, ...]) -> VariantIndex:
        return cls(names, os.urandom(GENERATION_BYTES))

    def with_variant(self, slot: bytes, limit: int) -> tuple[VariantIndex, tuple[bytes, ...]]:
        """This index with variant ``slot`` listed last, and the slots ``limit`` pushes out."""
        kept = [v for v in self.variants if v != slot]
        kept.append(slot)
        evicted = tuple(kept[:-limit]) if len(kept) > limit else ()
        return VariantIndex(self.names, self.generation, tuple(kept[-limit:])), evicted


class PassMarker:
    """Hit-for-pass: the slot's answer was uncacheable a moment ago."""


PASS = PassMarker()


class UnreadableSlot(ValueError):
    pass


def encode_index(index: VariantIndex) -> bytes:
    return b"".join(
        (
            INDEX_MAGIC,
            index.generation,
            b",".join(index.names),
            _SEP,
            b",".join(index.variants),
        )
    )


def decode_index(data: bytes) -> VariantIndex:
    """The index ``data`` encodes (it starts with INDEX_MAGIC); UnreadableSlot otherwise."""
    start = len(INDEX_MAGIC) + GENERATION_BYTES
    generation = data[len(INDEX_MAGIC) : start]
    names, sep, variants = data[start:].partition(_SEP)
    if len(generation) != GENERATION_BYTES or not sep or not names:
        raise UnreadableSlot("malformed variant index")
    return VariantIndex(
        tuple(names.split(b",")),
        generation,
        tuple(variants.split(b",")) if variants else (),
    )


def variant_of(record: VaryRecord) -> bytes:
    """The variant a Vary record selects, as one byte string: the values of the index's
    names, in order. Record it from the request as forwarded (vary.forwarded_view), so
    the stored variant is the one the origin was asked for."""
    return _SEP.join(b"!" if value is None else b"=" + value for _, value in record)


def variant_key(key: bytes, index: VariantIndex, variant: bytes) -> bytes:
    """The cache key of one variant of ``key`` under ``index``'s generation."""
    return b"".join((key, _SEP, index.generation, _SEP, variant))
