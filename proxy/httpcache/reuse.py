"""Serving from the cache (RFC 9111 §4, §4.2.4; RFC 5861)."""

import enum

from .cache_control import DELTA_MAX, EMPTY, CacheControl, parse_cache_control
from .entry import Entry
from .freshness import freshness_lifetime
from .headers import HeaderList, Headers, tokens
from .policy import CachePolicy
from .storable import Storability, sharing
from .vary import vary_matches

ERROR_STATUSES = frozenset({500, 502, 503, 504})
"""RFC 5861 §4: origin answers that count as errors for stale-if-error."""


class Reuse(enum.Enum):
    """What to do with a request for a key, given what is stored under it."""

    SERVE = "serve"
    """Serve the entry: it is fresh, or stale within the client's max-stale."""
    SERVE_STALE_REVALIDATE = "serve-stale-revalidate"
    """Serve the stale entry and revalidate it in the background (RFC 5861 §3)."""
    REVALIDATE = "revalidate"
    """Validate with the origin first; on failure ask on_origin_error()."""
    MISS = "miss"
    """Nothing usable is stored: fetch from the origin."""
    GATEWAY_TIMEOUT = "gateway-timeout"
    """only-if-cached and nothing usable without the origin: answer 504 (§5.2.1.7)."""


class OnError(enum.Enum):
    """What to answer when revalidation reached no usable origin response."""

    SERVE_STALE = "serve-stale"
    FORWARD = "forward"
    """Pass on the origin's response."""
    GATEWAY_TIMEOUT = "gateway-timeout"
    """The origin is unreachable and the entry may not be served stale: answer 504."""


def request_cache_control(request_headers: Headers) -> CacheControl:
    """The request's Cache-Control; without one, Pragma: no-cache counts as
    no-cache (§5.4)."""
    cc = parse_cache_control(request_headers)
    if cc is EMPTY and b"no-cache" in tokens(request_headers, b"pragma"):
        return CacheControl(no_cache=True)
    return cc


def stale_while_revalidate_window(response_cc: CacheControl) -> int | None:
    """Seconds past expiry the entry may be served while revalidating (RFC 5861 §3)."""
    return None if _forbids_stale(response_cc) else response_cc.stale_while_revalidate


def stale_if_error_window(response_cc: CacheControl, request_cc: CacheControl) -> int | None:
    """Seconds past expiry the entry may be served when the origin fails (RFC 5861 §4):
    the widest of the response's stale-if-error and the client's stale-if-error or
    max-stale."""
    if _forbids_stale(response_cc):
        return None
    windows = [response_cc.stale_if_error]
    if response_cc.s_maxage is None:
        windows += (request_cc.stale_if_error, request_cc.max_stale)
    return max((window for window in windows if window is not None), default=None)


def _forbids_stale(response_cc: CacheControl) -> bool:
    # §4.2.4: these in-protocol directives forbid serving stale, and as the most
    # restrictive directives they win over stale-while-revalidate/stale-if-error (§4.2.1).
    return response_cc.no_cache or response_cc.must_revalidate or response_cc.proxy_revalidate


def _client_max_stale(response_cc: CacheControl, request_cc: CacheControl) -> int | None:
    # §5.2.2.10: s-maxage implies proxy-revalidate, which the client cannot override.
    if _forbids_stale(response_cc) or response_cc.s_maxage is not None:
        return None
    return request_cc.max_stale


def decide(entry: Entry | None, request_headers: Headers, now: float, policy: CachePolicy) -> Reuse:
    """How to answer a GET or HEAD whose key holds ``entry`` (None: nothing stored)."""
    request_cc = request_cache_control(request_headers)
    if entry is None:
        return _origin_needed(request_cc, Reuse.MISS)
    response_cc = entry.cache_control
    if (
        not vary_matches(entry.vary, request_headers)
        or sharing(request_headers, response_cc, policy) is not Storability.STORABLE
    ):
        return _origin_needed(request_cc, Reuse.MISS)
    age, lifetime = _age_and_lifetime(entry, response_cc, now, policy)
    if (
        response_cc.no_cache
        or request_cc.no_cache
        or (request_cc.max_age is not None and age > request_cc.max_age)
        or (request_cc.min_fresh is not None and lifetime - age < request_cc.min_fresh)
    ):
        return _origin_needed(request_cc, Reuse.REVALIDATE)
    # §4.2: fresh while freshness_lifetime > current_age.
    if lifetime > age:
        return Reuse.SERVE
    staleness = age - lifetime
    max_stale = _client_max_stale(response_cc, request_cc)
    if max_stale is not None and staleness <= max_stale:
        return Reuse.SERVE
    window = stale_while_revalidate_window(response_cc)
    if window is not None and staleness <= window:
        return Reuse.SERVE_STALE_REVALIDATE
    return _origin_needed(request_cc, Reuse.REVALIDATE)


def _age_and_lifetime(
    entry: Entry, response_cc: CacheControl, now: float, policy: CachePolicy
) -> tuple[float, float]:
    lifetime = freshness_lifetime(
        entry.status, entry.headers, response_cc, entry.response_time, policy.heuristic_cap
    )
    return entry.age_at(now), lifetime


def _origin_needed(request_cc: CacheControl, verdict: Reuse) -> Reuse:
    # §5.2.1.7: only-if-cached forbids contacting the origin.
    return Reuse.GATEWAY_TIMEOUT if request_cc.only_if_cached else verdict


def on_origin_error(
    entry: Entry,
    request_headers: Headers,
    now: float,
    origin_status: int | None,
    policy: CachePolicy,
) -> OnError:
    """What to answer when revalidating ``entry`` failed: ``origin_status`` is the
    origin's status, or None if it could not be reached.

    The entry is served stale only within stale_if_error_window(); otherwise an
    unreachable origin gives 504, as must-revalidate requires (§5.2.2.2), and the
    origin's own answer is passed on.
    """
    if origin_status is not None and origin_status not in ERROR_STATUSES:
        return OnError.FORWARD
    response_cc = entry.cache_control
    window = stale_if_error_window(response_cc, request_cache_control(request_headers))
    if window is not None:
        age, lifetime = _age_and_lifetime(entry, response_cc, now, policy)
        if age - lifetime <= window:
            return OnError.SERVE_STALE
    return OnError.GATEWAY_TIMEOUT if origin_status is None else OnError.FORWARD


def served_headers(entry: Entry, now: float) -> HeaderList:
    """The entry's headers for a response at ``now``, with Age set to its current
    age (§5.1) in whole seconds."""
    age = min(max(int(entry.age_at(now)), 0), DELTA_MAX)
    headers = list(entry.headers_without_age)
    headers.append((b"age", b"%d" % age))
    return headers
