"""Variant selection by Vary (RFC 9111 §4.1)."""

from collections.abc import Sequence

from .headers import Headers, tokens

VaryRecord = tuple[tuple[bytes, bytes | None], ...]
"""Each nominated field name with the storing request's normalised value (None: absent)."""


def vary_names(headers: Headers) -> tuple[bytes, ...] | None:
    """Lowercased field names the response's Vary nominates, without duplicates, or
    None for Vary: *, which no later request matches."""
    names: list[bytes] = []
    for name in tokens(headers, b"vary"):
        if name == b"*":
            return None
        if name not in names:
            names.append(name)
    return tuple(names)


def normalised_value(headers: Headers, name: bytes) -> bytes | None:
    """All ``name`` lines combined into one list (RFC 9110 §5.3), with whitespace
    runs inside members collapsed, whitespace around members and empty members
    removed; None if the request lacks the field."""
    members: list[bytes] | None = None
    for field, value in headers:
        if field != name:
            continue
        if members is None:
            members = []
        for member in value.split(b","):
            collapsed = b" ".join(member.split())
            if collapsed:
                members.append(collapsed)
    return None if members is None else b",".join(members)


def vary_record(names: Sequence[bytes], request_headers: Headers) -> VaryRecord:
    return tuple((name, normalised_value(request_headers, name)) for name in names)


def vary_matches(record: VaryRecord, request_headers: Headers) -> bool:
    """Whether ``request_headers`` select the variant stored with ``record``; a field
    absent from the storing request matches only when absent here too."""
    return all(normalised_value(request_headers, name) == value for name, value in record)
