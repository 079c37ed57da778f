"""Storing responses: RFC 9111 §3."""

import pytest

from proxy.httpcache.dates import format_http_date
from proxy.httpcache.freshness import HEURISTICALLY_CACHEABLE
from proxy.httpcache.headers import Headers
from proxy.httpcache.policy import CachePolicy
from proxy.httpcache.storable import (
    UNDERSTOOD_STATUSES,
    Storability,
    make_entry,
    storability,
    stored_headers,
)

T = 1_700_000_000.0
DEFAULT = CachePolicy(heuristic_cap=86400.0, cache_with_cookies=False)
COOKIES = CachePolicy(heuristic_cap=86400.0, cache_with_cookies=True)
FRESH: Headers = [(b"cache-control", b"max-age=60")]


def verdict(
    response: Headers = FRESH,
    request: Headers = (),
    status: int = 200,
    method: bytes = b"GET",
    policy: CachePolicy = DEFAULT,
) -> Storability:
    return storability(method, request, status, response, policy)


def test_plain_fresh_response_is_storable_3() -> None:
    assert verdict() is Storability.STORABLE


@pytest.mark.parametrize("method", [b"HEAD", b"POST", b"PUT", b"get"])
def test_only_get_is_stored_3(method: bytes) -> None:
    assert verdict(method=method) is Storability.METHOD


@pytest.mark.parametrize("status", [100, 101, 103, 206, 304])
def test_non_final_partial_and_304_not_stored_3(status: int) -> None:
    assert verdict(status=status) is Storability.STATUS


def test_must_understand_rejects_unknown_status_5_2_2_3() -> None:
    response = [(b"cache-control", b"max-age=60, must-understand, no-store")]
    assert verdict(response, status=299) is Storability.STATUS
    assert verdict([(b"cache-control", b"max-age=60")], status=299) is Storability.STORABLE


def test_must_understand_overrides_no_store_for_known_status_5_2_2_3() -> None:
    response = [(b"cache-control", b"max-age=60, must-understand, no-store")]
    assert verdict(response, status=200) is Storability.STORABLE


def test_response_no_store_5_2_2_5() -> None:
    assert verdict([(b"cache-control", b"no-store, max-age=60")]) is Storability.NO_STORE


def test_request_no_store_5_2_1_5() -> None:
    request = [(b"cache-control", b"no-store")]
    assert verdict(request=request) is Storability.REQUEST_NO_STORE


@pytest.mark.parametrize("value", [b"private", b'private="set-cookie"', b"PRIVATE, max-age=9"])
def test_private_never_stored_by_shared_cache_5_2_2_7(value: bytes) -> None:
    assert verdict([(b"cache-control", value)]) is Storability.PRIVATE


def test_authorization_needs_explicit_permission_3_5() -> None:
    request = [(b"authorization", b"Bearer x")]
    assert verdict(request=request) is Storability.AUTHORIZATION
    for allowed in (b"public, max-age=5", b"s-maxage=5", b"max-age=5, must-revalidate"):
        assert verdict([(b"cache-control", allowed)], request) is Storability.STORABLE


def test_cookie_request_not_stored_unless_configured() -> None:
    request = [(b"cookie", b"a=1")]
    assert verdict(request=request) is Storability.COOKIE
    assert verdict(request=request, policy=COOKIES) is Storability.STORABLE


def test_set_cookie_response_not_stored_unless_configured() -> None:
    response = [*FRESH, (b"set-cookie", b"s=1")]
    assert verdict(response) is Storability.SET_COOKIE
    assert verdict(response, policy=COOKIES) is Storability.STORABLE


def test_vary_star_not_stored_4_1() -> None:
    assert verdict([*FRESH, (b"vary", b"accept, *")]) is Storability.VARY_STAR


@pytest.mark.parametrize("status", sorted(HEURISTICALLY_CACHEABLE - {206}))
def test_heuristically_cacheable_statuses_stored_without_expiry_3(status: int) -> None:
    assert verdict([], status=status) is Storability.STORABLE


@pytest.mark.parametrize("status", [201, 302, 303, 307, 403, 500, 503])
def test_other_statuses_need_explicit_freshness_3(status: int) -> None:
    assert verdict([], status=status) is Storability.NO_FRESHNESS
    assert verdict(FRESH, status=status) is Storability.STORABLE
    assert verdict([(b"expires", b"0")], status=status) is Storability.STORABLE
    assert verdict([(b"cache-control", b"public")], status=status) is Storability.STORABLE


def test_understood_statuses_exclude_partial_and_304() -> None:
    assert {206, 304}.isdisjoint(UNDERSTOOD_STATUSES)


def test_stored_headers_drop_hop_by_hop_connection_listed_and_set_cookie_3_1() -> None:
    response = [
        (b"connection", b"x-trace"),
        (b"x-trace", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"s=1"),
        (b"date", format_http_date(T)),
        (b"content-type", b"text/plain"),
    ]
    assert stored_headers(response, T + 1) == [
        (b"date", format_http_date(T)),
        (b"content-type", b"text/plain"),
    ]


def test_stored_headers_add_missing_date_rfc9110_6_6_1() -> None:
    assert stored_headers([], T) == [(b"date", format_http_date(T))]


def test_make_entry_records_vary_values_4_1() -> None:
    response = [*FRESH, (b"vary", b"Accept-Encoding, Accept-Language")]
    entry = make_entry([(b"accept-encoding", b"gzip,  br")], 200, response, b"body", T - 1, T)
    assert entry.vary == ((b"accept-encoding", b"gzip,br"), (b"accept-language", None))
    assert entry.body == b"body"
    assert (entry.request_time, entry.response_time) == (T - 1, T)


def test_make_entry_refuses_vary_star() -> None:
    with pytest.raises(ValueError, match="Vary"):
        make_entry([], 200, [(b"vary", b"*")], b"", T, T)
