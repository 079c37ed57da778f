"""Freshness lifetime (RFC 9111 §4.2.1, §4.2.2)."""

from .age import date_value
from .cache_control import CacheControl
from .dates import parse_http_date
from .headers import Headers, first

HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
"""RFC 9110 §15.1: status codes whose responses may get heuristic freshness."""

HEURISTIC_FRACTION = 0.1
"""§4.2.2: a typical heuristic is 10% of the time since Last-Modified."""


def has_explicit_expiration(headers: Headers, cc: CacheControl) -> bool:
    """Whether the response states its own expiry (s-maxage, max-age or Expires).

    An invalid Expires still counts: it states that the response has expired.
    """
    return (
        cc.s_maxage is not None or cc.max_age is not None or first(headers, b"expires") is not None
    )


def freshness_lifetime(
    status: int, headers: Headers, cc: CacheControl, response_time: float, heuristic_cap: float
) -> float:
    """Seconds the response stays fresh in a shared cache.

    Precedence (§4.2.1): s-maxage, max-age, then Expires minus Date. Without any
    of them, a heuristically cacheable status or a public response gets
    HEURISTIC_FRACTION of (Date - Last-Modified), at most ``heuristic_cap``
    (§4.2.2); otherwise 0.
    """
    if cc.s_maxage is not None:
        return cc.s_maxage
    if cc.max_age is not None:
        return cc.max_age
    expires: bytes | None = None
    for field, value in headers:
        if field == b"expires":
            # §4.2.1: a response with conflicting Expires lines is considered stale.
            if expires is not None and value != expires:
                return 0.0
            expires = value
    if expires is not None:
        # §5.3: an invalid Expires (e.g. "0") means already expired.
        timestamp = parse_http_date(expires, response_time)
        if timestamp is None:
            return 0.0
        return max(0.0, timestamp - date_value(headers, response_time))
    if status not in HEURISTICALLY_CACHEABLE and not cc.public:
        return 0.0
    last_modified_value = first(headers, b"last-modified")
    if last_modified_value is None:
        return 0.0
    last_modified = parse_http_date(last_modified_value, response_time)
    if last_modified is None:
        return 0.0
    since_modified = date_value(headers, response_time) - last_modified
    return min(heuristic_cap, max(0.0, since_modified * HEURISTIC_FRACTION))
