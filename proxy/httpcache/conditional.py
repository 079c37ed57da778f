"""Answering a client's conditional GET/HEAD from a stored entry (RFC 9111 §4.3.2,
RFC 9110 §13.2.2)."""

from .dates import parse_http_date
from .entry import Entry
from .etag import entity_tag, entity_tags, weak_equal
from .headers import HeaderList, Headers, first

# RFC 9110 §15.4.5: the fields a 304 carries when the 200 would have them, plus Age,
# which is control data rather than representation metadata.
_NOT_MODIFIED_FIELDS = frozenset(
    {b"age", b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)


def is_not_modified(request_headers: Headers, entry: Entry) -> bool:
    """Whether to answer 304 instead of the entry.

    If-None-Match, when present, decides alone (RFC 9110 §13.2.2 step 3): "*" or a
    weakly matching tag gives 304. Otherwise a single valid If-Modified-Since gives
    304 when the entry's Last-Modified (else its Date, else the time it was
    received; §4.3.2) is not later. If-Match and If-Unmodified-Since do not apply
    to a cache (§4.3.2).
    """
    none_match = [value for field, value in request_headers if field == b"if-none-match"]
    if none_match:
        return _none_match_fails(b",".join(none_match), first(entry.headers, b"etag"))
    modified_since = [value for field, value in request_headers if field == b"if-modified-since"]
    # RFC 9110 §13.1.3: ignore an invalid date or more than one member.
    if len(modified_since) != 1:
        return False
    since = parse_http_date(modified_since[0], entry.response_time)
    if since is None:
        return False
    validator = first(entry.headers, b"last-modified") or first(entry.headers, b"date")
    modified = None if validator is None else parse_http_date(validator, entry.response_time)
    return (entry.response_time if modified is None else modified) <= since


def _none_match_fails(value: bytes, stored_etag: bytes | None) -> bool:
    # RFC 9110 §13.1.2: "*" is false when a current representation exists, which a
    # stored entry is; otherwise false when a listed tag weakly matches the ETag.
    if value.strip() == b"*":
        return True
    tags = entity_tags(value)
    current = None if stored_etag is None else entity_tag(stored_etag)
    return (
        tags is not None and current is not None and any(weak_equal(tag, current) for tag in tags)
    )


def not_modified_headers(headers: Headers) -> HeaderList:
    """The subset of a served response's ``headers`` that its 304 carries."""
    return [(field, value) for field, value in headers if field in _NOT_MODIFIED_FIELDS]
