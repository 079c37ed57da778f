"""Variant selection by Vary (RFC 9111 §4.1)."""

from collections.abc import Sequence

from .headers import HeaderList, Headers, hop_by_hop_names, tokens

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


def accept_encoding_bucket(headers: Headers) -> bytes | None:
    """The request's Accept-Encoding reduced to the coding a cache keeps apart: br, else
    gzip, else None (identity). Clients spell the field in countless ways; matching
    them raw would store one variant per browser build."""
    accepted: set[bytes] = set()
    for member in tokens(headers, b"accept-encoding"):
        coding, _, params = member.partition(b";")
        quality = params.strip().removeprefix(b"q=").strip() if params else b"1"
        if quality and quality.strip(b"0.") == b"":
            continue  # q=0 refuses the coding
        accepted.add(coding.strip())
    if b"br" in accepted:
        return b"br"
    if accepted & {b"gzip", b"x-gzip", b"*"}:
        return b"gzip"
    return None


def forwarded_view(headers: Headers) -> HeaderList:
    """The request as the cache forwards and keys it: without hop-by-hop fields and
    those its Connection nominates, and with Accept-Encoding reduced to its bucket.
    Variants are recorded from and matched against this view, so a field the origin
    never saw cannot select a variant."""
    dropped = hop_by_hop_names(headers) | {b"accept-encoding"}
    view = [(name, value) for name, value in headers if name not in dropped]
    bucket = accept_encoding_bucket(headers)
    if bucket is not None:
        view.append((b"accept-encoding", bucket))
    return view
