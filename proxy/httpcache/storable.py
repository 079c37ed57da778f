"""Whether and what to store (RFC 9111 §3)."""

import enum

from .cache_control import CacheControl, parse_cache_control
from .dates import format_http_date
from .entry import Entry
from .freshness import HEURISTICALLY_CACHEABLE, has_explicit_expiration
from .headers import HeaderList, Headers, first, hop_by_hop_names, without
from .policy import CachePolicy
from .vary import vary_names, vary_record

UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426, 500, 501, 502, 503, 504, 505}
)
"""Final statuses RFC 9110 defines whose caching rules this cache implements. 206
(no range assembly) and 304 (merged, never stored) are left out, so §3's
"understands the status code" test rejects them, as it does any status under
must-understand (§5.2.2.3) that is not listed."""

_NOT_STORED = frozenset({b"set-cookie"})


class Storability(enum.Enum):
    """STORABLE, or the first reason a response may not be stored."""

    STORABLE = "storable"
    METHOD = "method"
    STATUS = "status"
    REQUEST_NO_STORE = "request-no-store"
    NO_STORE = "no-store"
    PRIVATE = "private"
    AUTHORIZATION = "authorization"
    COOKIE = "cookie"
    SET_COOKIE = "set-cookie"
    VARY_STAR = "vary-star"
    NO_FRESHNESS = "no-freshness"


def sharing(
    request_headers: Headers, response_cc: CacheControl, policy: CachePolicy
) -> Storability:
    """STORABLE if a response with ``response_cc`` may be shared with this request,
    both when storing it and when serving it (AUTHORIZATION or COOKIE otherwise).

    §3.5: a request with Authorization is shared only if the response says so with
    public, s-maxage or must-revalidate. Requests with Cookie bypass the cache
    unless ``policy.cache_with_cookies``.
    """
    if not policy.cache_with_cookies and first(request_headers, b"cookie") is not None:
        return Storability.COOKIE
    if first(request_headers, b"authorization") is not None and not (
        response_cc.public or response_cc.s_maxage is not None or response_cc.must_revalidate
    ):
        return Storability.AUTHORIZATION
    return Storability.STORABLE


def storability(
    method: bytes,
    request_headers: Headers,
    status: int,
    response_headers: Headers,
    policy: CachePolicy,
) -> Storability:
    """Whether a shared cache may store this response to this request (§3).

    The caller must also not store a response whose body was cut short (§3.3).
    """
    if method != b"GET":
        return Storability.METHOD
    cc = parse_cache_control(response_headers)
    # §3: 1xx is not final; 206, 304 and any status under must-understand must be understood.
    if status not in UNDERSTOOD_STATUSES and (
        status < 200 or status in (206, 304) or cc.must_understand
    ):
        return Storability.STATUS
    if parse_cache_control(request_headers).no_store:
        return Storability.REQUEST_NO_STORE
    # §5.2.2.3: must-understand with an understood status overrides no-store.
    if cc.no_store and not cc.must_understand:
        return Storability.NO_STORE
    if cc.private:
        return Storability.PRIVATE
    shared = sharing(request_headers, cc, policy)
    if shared is not Storability.STORABLE:
        return shared
    if not policy.cache_with_cookies and first(response_headers, b"set-cookie") is not None:
        return Storability.SET_COOKIE
    if vary_names(response_headers) is None:
        return Storability.VARY_STAR
    if not (
        cc.public
        or status in HEURISTICALLY_CACHEABLE
        or has_explicit_expiration(response_headers, cc)
    ):
        return Storability.NO_FRESHNESS
    return Storability.STORABLE


def stored_headers(response_headers: Headers, response_time: float) -> HeaderList:
    """The response's fields as stored: without hop-by-hop fields (RFC 9110 §7.6.1)
    or Set-Cookie, and with a Date of ``response_time`` if it had none (§6.6.1)."""
    stored = without(response_headers, hop_by_hop_names(response_headers) | _NOT_STORED)
    if first(stored, b"date") is None:
        stored.append((b"date", format_http_date(response_time)))
    return stored


def make_entry(
    request_headers: Headers,
    status: int,
    response_headers: Headers,
    body: bytes,
    request_time: float,
    response_time: float,
) -> Entry:
    """The entry for a response that storability() accepted, with its whole body."""
    headers = tuple(stored_headers(response_headers, response_time))
    names = vary_names(headers)
    if names is None:
        raise ValueError("a Vary: * response is never stored")
    return Entry(
        status, headers, body, request_time, response_time, vary_record(names, request_headers)
    )
