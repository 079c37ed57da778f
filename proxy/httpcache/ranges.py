"""Answering a single byte Range from a stored 200 (RFC 9110 §14).

Only one range is served from the cache; a request for several gets the whole 200,
which §14.2 allows (a server may ignore Range). If-Range (§13.1.5) must match the
entry's strong ETag, or equal its Last-Modified, or the whole 200 is sent.
"""

from __future__ import annotations

from .etag import entity_tag, strong_equal
from .headers import Headers, first

UNSATISFIABLE = (-1, -1)
"""A range that selects no byte of the representation: answer 416."""


def byte_range(value: bytes, length: int) -> tuple[int, int] | None:
    """The first and last byte ``value`` (a Range field) selects of ``length`` bytes,
    UNSATISFIABLE, or None when the range is to be ignored (not bytes, malformed, or
    more than one range)."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition(b"-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:
        # A suffix range: the last N bytes.
        suffix = int(last_text)
        if suffix == 0 or length == 0:
            return UNSATISFIABLE
        return max(length - suffix, 0), length - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    start = int(first_text)
    if last_text and int(last_text) < start:
        return None
    if start >= length:
        return UNSATISFIABLE
    return start, min(int(last_text), length - 1) if last_text else length - 1


def if_range_allows(request_headers: Headers, entry_headers: Headers) -> bool:
    """Whether the request's If-Range (if any) lets a range of this entry be sent."""
    condition = first(request_headers, b"if-range")
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith((b'"', b"W/")):
        stored = first(entry_headers, b"etag")
        tag, stored_tag = entity_tag(condition), None if stored is None else entity_tag(stored)
        return tag is not None and stored_tag is not None and strong_equal(tag, stored_tag)
    return condition == first(entry_headers, b"last-modified")
