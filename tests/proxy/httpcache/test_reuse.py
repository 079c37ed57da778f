"""Serving stored responses: RFC 9111 §4, §4.2.4, §5.2 and RFC 5861."""

import pytest

from proxy.httpcache.dates import format_http_date
from proxy.httpcache.entry import Entry
from proxy.httpcache.headers import Headers
from proxy.httpcache.policy import CachePolicy
from proxy.httpcache.reuse import (
    OnError,
    Reuse,
    decide,
    on_origin_error,
    request_cache_control,
    served_headers,
    stale_if_error_window,
    stale_while_revalidate_window,
)
from proxy.httpcache.storable import make_entry

T = 1_700_000_000.0
POLICY = CachePolicy(heuristic_cap=86400.0, cache_with_cookies=False)
COOKIES = CachePolicy(heuristic_cap=86400.0, cache_with_cookies=True)


def stored(cache_control: bytes, *extra: tuple[bytes, bytes], request: Headers = ()) -> Entry:
    """An entry received at T with the given Cache-Control and a Date of T."""
    response = [(b"cache-control", cache_control), (b"date", format_http_date(T)), *extra]
    return make_entry(request, 200, response, b"body", T, T)


def at(entry: Entry | None, age: float, request: Headers = ()) -> Reuse:
    return decide(entry, request, T + age, POLICY)


def rcc(value: bytes) -> Headers:
    return [(b"cache-control", value)]


def test_no_entry_is_a_miss() -> None:
    assert at(None, 0) is Reuse.MISS


def test_fresh_entry_served_4_2() -> None:
    assert at(stored(b"max-age=60"), 59) is Reuse.SERVE


def test_stale_exactly_at_lifetime_4_2() -> None:
    assert at(stored(b"max-age=60"), 60) is Reuse.REVALIDATE


def test_age_field_counts_toward_age_4_2_3() -> None:
    assert at(stored(b"max-age=60", (b"age", b"50")), 11) is Reuse.REVALIDATE


def test_vary_mismatch_is_a_miss_4_1() -> None:
    entry = stored(b"max-age=60", (b"vary", b"accept"), request=[(b"accept", b"text/html")])
    assert at(entry, 1, [(b"accept", b"text/html")]) is Reuse.SERVE
    assert at(entry, 1, [(b"accept", b"application/json")]) is Reuse.MISS


def test_response_no_cache_always_revalidates_5_2_2_4() -> None:
    assert at(stored(b"no-cache, max-age=60"), 0) is Reuse.REVALIDATE


def test_request_no_cache_revalidates_5_2_1_4() -> None:
    assert at(stored(b"max-age=60"), 0, rcc(b"no-cache")) is Reuse.REVALIDATE


def test_pragma_no_cache_without_cache_control_5_4() -> None:
    entry = stored(b"max-age=60")
    assert at(entry, 0, [(b"pragma", b"no-cache")]) is Reuse.REVALIDATE
    assert at(entry, 0, [(b"pragma", b"no-cache"), *rcc(b"max-stale")]) is Reuse.SERVE
    assert request_cache_control([(b"pragma", b"x, No-Cache")]).no_cache


def test_request_max_age_5_2_1_1() -> None:
    entry = stored(b"max-age=600")
    assert at(entry, 30, rcc(b"max-age=30")) is Reuse.SERVE
    assert at(entry, 31, rcc(b"max-age=30")) is Reuse.REVALIDATE
    assert at(entry, 0.5, rcc(b"max-age=0")) is Reuse.REVALIDATE


def test_request_min_fresh_5_2_1_3() -> None:
    entry = stored(b"max-age=60")
    assert at(entry, 30, rcc(b"min-fresh=30")) is Reuse.SERVE
    assert at(entry, 31, rcc(b"min-fresh=30")) is Reuse.REVALIDATE


def test_request_max_stale_5_2_1_2() -> None:
    entry = stored(b"max-age=60")
    assert at(entry, 90, rcc(b"max-stale=30")) is Reuse.SERVE
    assert at(entry, 91, rcc(b"max-stale=30")) is Reuse.REVALIDATE
    assert at(entry, 10**6, rcc(b"max-stale")) is Reuse.SERVE


@pytest.mark.parametrize("directive", [b"must-revalidate", b"proxy-revalidate", b"s-maxage=60"])
def test_revalidate_directives_override_max_stale_5_2_2_2(directive: bytes) -> None:
    entry = stored(b"max-age=60, " + directive)
    assert at(entry, 61, rcc(b"max-stale")) is Reuse.REVALIDATE


def test_stale_while_revalidate_window_rfc5861_3() -> None:
    entry = stored(b"max-age=60, stale-while-revalidate=30")
    assert at(entry, 59) is Reuse.SERVE
    assert at(entry, 90) is Reuse.SERVE_STALE_REVALIDATE
    assert at(entry, 91) is Reuse.REVALIDATE


def test_s_maxage_allows_origin_stale_while_revalidate_rfc5861_3() -> None:
    assert at(stored(b"s-maxage=1, stale-while-revalidate=59"), 30) is (
        Reuse.SERVE_STALE_REVALIDATE
    )


@pytest.mark.parametrize("directive", [b"must-revalidate", b"proxy-revalidate", b"no-cache"])
def test_revalidate_directives_disable_stale_windows_4_2_1(directive: bytes) -> None:
    entry = stored(b"max-age=60, stale-while-revalidate=30, stale-if-error=30, " + directive)
    assert at(entry, 70) is Reuse.REVALIDATE
    assert on_origin_error(entry, (), T + 70, None, POLICY) is OnError.GATEWAY_TIMEOUT


def test_only_if_cached_5_2_1_7() -> None:
    entry = stored(b"max-age=60")
    assert at(None, 0, rcc(b"only-if-cached")) is Reuse.GATEWAY_TIMEOUT
    assert at(entry, 1, rcc(b"only-if-cached")) is Reuse.SERVE
    assert at(entry, 61, rcc(b"only-if-cached")) is Reuse.GATEWAY_TIMEOUT


def test_authorization_request_served_only_if_response_allows_3_5() -> None:
    auth = [(b"authorization", b"Basic x")]
    assert at(stored(b"max-age=60"), 1, auth) is Reuse.MISS
    assert at(stored(b"public, max-age=60"), 1, auth) is Reuse.SERVE


def test_cookie_request_bypasses_unless_configured() -> None:
    entry = stored(b"max-age=60")
    cookie = [(b"cookie", b"a=1")]
    assert at(entry, 1, cookie) is Reuse.MISS
    assert decide(entry, cookie, T + 1, COOKIES) is Reuse.SERVE


def test_heuristic_freshness_used_for_reuse_4_2_2() -> None:
    last_modified = (b"last-modified", format_http_date(T - 1000))
    entry = make_entry([], 200, [(b"date", format_http_date(T)), last_modified], b"", T, T)
    assert at(entry, 99) is Reuse.SERVE
    assert at(entry, 101) is Reuse.REVALIDATE


def test_must_revalidate_origin_down_is_504_5_2_2_2() -> None:
    entry = stored(b"max-age=60, must-revalidate")
    assert on_origin_error(entry, (), T + 61, None, POLICY) is OnError.GATEWAY_TIMEOUT
    assert on_origin_error(entry, (), T + 61, 503, POLICY) is OnError.FORWARD


def test_stale_if_error_window_rfc5861_4() -> None:
    entry = stored(b"max-age=60, stale-if-error=100")
    assert on_origin_error(entry, (), T + 160, None, POLICY) is OnError.SERVE_STALE
    assert on_origin_error(entry, (), T + 160, 502, POLICY) is OnError.SERVE_STALE
    assert on_origin_error(entry, (), T + 161, None, POLICY) is OnError.GATEWAY_TIMEOUT
    assert on_origin_error(entry, (), T + 161, 500, POLICY) is OnError.FORWARD


def test_non_error_origin_status_is_forwarded_rfc5861_4() -> None:
    entry = stored(b"max-age=60, stale-if-error=100")
    assert on_origin_error(entry, (), T + 61, 404, POLICY) is OnError.FORWARD


def test_no_stale_on_error_without_permission_4_2_4() -> None:
    entry = stored(b"max-age=60")
    assert on_origin_error(entry, (), T + 61, None, POLICY) is OnError.GATEWAY_TIMEOUT


def test_request_stale_if_error_and_max_stale_rfc5861_4() -> None:
    entry = stored(b"max-age=60")
    for request in (rcc(b"stale-if-error=10"), rcc(b"max-stale=10")):
        assert on_origin_error(entry, request, T + 70, None, POLICY) is OnError.SERVE_STALE
        assert on_origin_error(entry, request, T + 71, None, POLICY) is OnError.GATEWAY_TIMEOUT


def test_windows_rfc5861() -> None:
    response = request_cache_control(rcc(b"s-maxage=5, stale-while-revalidate=7"))
    assert stale_while_revalidate_window(response) == 7
    client = request_cache_control(rcc(b"stale-if-error=50"))
    assert stale_if_error_window(response, client) is None
    own = request_cache_control(rcc(b"max-age=5, stale-if-error=9"))
    assert stale_if_error_window(own, client) == 50


def test_served_headers_replace_age_5_1() -> None:
    entry = stored(b"max-age=600", (b"age", b"10"))
    headers = served_headers(entry, T + 5.7)
    assert [value for name, value in headers if name == b"age"] == [b"15"]


def test_served_age_never_negative_after_clock_step_back_5_1() -> None:
    headers = served_headers(stored(b"max-age=600"), T - 100)
    assert (b"age", b"0") in headers
