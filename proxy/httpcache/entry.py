"""A stored response and its byte encoding for memcached/redis.

Layout, integers in network byte order::

    magic "RLHC" | version u8 | status u16 | request_time f64 | response_time f64
    | header count u32 | vary count u32 | header block length u32
    | vary block length u32 | body length u64
    | header block: names and values joined by NUL
    | one presence byte (0 or 1) per vary field
    | vary block: names, and the values that are present, joined by NUL
    | body

NUL can separate because field names are tokens and RFC 9110 §5.5 forbids NUL in
field values; one bytes.split() then decodes all headers.
"""

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

from .age import age_value, corrected_initial_age, date_value, resident_time
from .cache_control import CacheControl, parse_cache_control
from .vary import VaryRecord

MAGIC = b"RLHC"
# 2: names always lowercase (version 1 entries may hold an origin's Title-Case names).
VERSION = 2
_FIXED = struct.Struct("!4sBHddIIIIQ")
_NUL = b"\0"


class UnreadableEntry(ValueError):
    """The bytes are not an entry this version can read; treat the lookup as a miss."""


@dataclass(frozen=True)
class Entry:
    """A stored response (RFC 9111 §3).

    ``headers`` are already filtered for storage (no hop-by-hop fields, always a
    Date). ``vary`` pairs each field the response's Vary nominates with the
    normalised value the storing request had, or None if it lacked the field.

    The cached properties are facts of the immutable fields, parsed once per entry: a
    hit reuses the decoded entry while the stored bytes are unchanged (decoded.py).
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    request_time: float
    response_time: float
    vary: VaryRecord = ()

    @cached_property
    def cache_control(self) -> CacheControl:
        return parse_cache_control(self.headers)

    @cached_property
    def initial_age(self) -> float:
        """corrected_initial_age (§4.2.3): the entry's age when it was received."""
        return corrected_initial_age(
            date_value(self.headers, self.response_time),
            age_value(self.headers),
            self.request_time,
            self.response_time,
        )

    @cached_property
    def headers_without_age(self) -> tuple[tuple[bytes, bytes], ...]:
        return tuple((field, value) for field, value in self.headers if field != b"age")

    def age_at(self, now: float) -> float:
        """current_age (§4.2.3) at ``now``."""
        return self.initial_age + resident_time(self.response_time, now)


def encode_entry(entry: Entry) -> bytes:
    """The bytes for ``entry``; ValueError if a field name or value contains NUL."""
    header_block = _join(chain.from_iterable(entry.headers), 2 * len(entry.headers))
    present = [value for _, value in entry.vary if value is not None]
    vary_block = _join(
        chain((name for name, _ in entry.vary), present), len(entry.vary) + len(present)
    )
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        entry.status,
        entry.request_time,
        entry.response_time,
        len(entry.headers),
        len(entry.vary),
        len(header_block),
        len(vary_block),
        len(entry.body),
    )
    flags = bytes(value is not None for _, value in entry.vary)
    return b"".join((fixed, header_block, flags, vary_block, entry.body))


def _join(parts: Iterable[bytes], count: int) -> bytes:
    block = _NUL.join(parts)
    if block.count(_NUL) != max(count - 1, 0):
        raise ValueError("field names and values cannot contain NUL (RFC 9110 §5.5)")
    return block


def decode_entry(data: bytes) -> Entry:
    """The entry ``data`` encodes; raises UnreadableEntry for anything else."""
    if len(data) < _FIXED.size:
        raise UnreadableEntry("shorter than the fixed header")
    (
        magic,
        version,
        status,
        request_time,
        response_time,
        n_headers,
        n_vary,
        header_length,
        vary_length,
        body_length,
    ) = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise UnreadableEntry("bad magic")
    if version != VERSION:
        raise UnreadableEntry(f"unknown version {version}")
    if not (100 <= status <= 999 and math.isfinite(request_time) and math.isfinite(response_time)):
        raise UnreadableEntry("invalid status or times")
    flags_start = _FIXED.size + header_length
    vary_start = flags_start + n_vary
    body_start = vary_start + vary_length
    if body_start + body_length != len(data):
        raise UnreadableEntry("length mismatch: truncated or trailing bytes")
    fields = _split(data[_FIXED.size : flags_start], 2 * n_headers)
    flags = data[flags_start:vary_start]
    present = flags.count(1)
    if present + flags.count(0) != n_vary:
        raise UnreadableEntry("invalid vary presence flag")
    vary_fields = _split(data[vary_start:body_start], n_vary + present)
    values = iter(vary_fields[n_vary:])
    vary = tuple(
        (name, next(values) if flag else None)
        for name, flag in zip(vary_fields[:n_vary], flags, strict=True)
    )
    names = fields[0::2]
    # Names are stored lowercase; lowering them again costs little and keeps an entry
    # from any other writer of the shared tier comparable.
    return Entry(
        status,
        tuple(zip((name.lower() for name in names), fields[1::2], strict=True)),
        data[body_start:],
        request_time,
        response_time,
        vary,
    )


def _split(block: bytes, count: int) -> list[bytes]:
    parts = block.split(_NUL) if count else []
    if len(parts) != count or (not count and block):
        raise UnreadableEntry("field count mismatch")
    return parts
