"""Revalidating a stored entry with the origin (RFC 9111 §4.3.1, §4.3.3, §4.3.4)."""

import dataclasses

from .entry import Entry
from .etag import entity_tag, strong_equal, weak_equal
from .headers import HeaderList, Headers, first, without
from .storable import stored_headers

# The client's own preconditions and ranges are answered by the cache from the
# revalidated entry, so they are not forwarded.
_CLIENT_CONDITIONS = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)


def revalidation_headers(request_headers: Headers, entry: Entry) -> HeaderList:
    """Headers for the conditional request that validates ``entry`` (§4.3.1):
    ``request_headers`` (already fit to forward) without the client's conditions,
    plus If-None-Match from the entry's ETag and If-Modified-Since from its
    Last-Modified."""
    headers = without(request_headers, _CLIENT_CONDITIONS)
    etag = first(entry.headers, b"etag")
    if etag is not None:
        headers.append((b"if-none-match", etag))
    last_modified = first(entry.headers, b"last-modified")
    if last_modified is not None:
        headers.append((b"if-modified-since", last_modified))
    return headers


def freshen(
    entry: Entry, not_modified: Headers, request_time: float, response_time: float
) -> Entry | None:
    """``entry`` updated by a 304 (§4.3.4), or None if the 304 describes another
    representation, in which case the entry must not be used.

    The 304's strong ETag must equal the entry's strong ETag, a weak one must
    match weakly, and without an ETag a Last-Modified must be identical. A 304
    with no validator is taken to answer the conditional request built from this
    entry. Its fields replace the stored ones of the same name (§3.2), except
    Content-Length and those never stored. The caller should check storability()
    of the result before writing it back: the 304 may have added no-store.
    """
    new_etag = first(not_modified, b"etag")
    if new_etag is not None:
        new_tag = entity_tag(new_etag)
        stored_etag = first(entry.headers, b"etag")
        stored_tag = None if stored_etag is None else entity_tag(stored_etag)
        if new_tag is None or stored_tag is None:
            return None
        equal = weak_equal if new_tag.startswith(b"W/") else strong_equal
        if not equal(new_tag, stored_tag):
            return None
    else:
        last_modified = first(not_modified, b"last-modified")
        if last_modified is not None and last_modified != first(entry.headers, b"last-modified"):
            return None
    update = [
        (field, value)
        for field, value in stored_headers(not_modified, response_time)
        if field != b"content-length"
    ]
    # The stored Age described the stored response at its receipt; the 304 restarts the
    # clock (§4.2.3 from the new times), carrying its own Age if it has one (§4.3.4).
    replaced = frozenset(field for field, _ in update) | {b"age"}
    return dataclasses.replace(
        entry,
        headers=(*without(entry.headers, replaced), *update),
        request_time=request_time,
        response_time=response_time,
    )
