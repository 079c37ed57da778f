"""Entity-tag parsing and comparison (RFC 9110 §8.8.3)."""

from .headers import OWS

_QUOTE = 0x22
_SEPARATORS = b" \t,"


def entity_tags(value: bytes) -> list[bytes] | None:
    """The entity-tags of a comma-separated list, each with its W/ prefix if weak,
    or None if ``value`` is malformed. etagc excludes DQUOTE and has no escapes,
    so a comma inside quotes belongs to the tag."""
    tags: list[bytes] = []
    position, end = 0, len(value)
    while position < end:
        if value[position] in _SEPARATORS:
            position += 1
            continue
        start = position
        if value.startswith(b"W/", position):
            position += 2
        if position >= end or value[position] != _QUOTE:
            return None
        close = value.find(b'"', position + 1)
        if close == -1:
            return None
        position = close + 1
        tags.append(value[start:position])
    return tags


def entity_tag(value: bytes) -> bytes | None:
    """The single entity-tag of an ETag field value, or None if malformed."""
    tags = entity_tags(value.strip(OWS))
    return tags[0] if tags is not None and len(tags) == 1 else None


def weak_equal(a: bytes, b: bytes) -> bool:
    """Weak comparison: the opaque tags match, whether or not either is weak."""
    return a.removeprefix(b"W/") == b.removeprefix(b"W/")


def strong_equal(a: bytes, b: bytes) -> bool:
    """Strong comparison: both tags are strong and identical."""
    return a == b and not a.startswith(b"W/")
