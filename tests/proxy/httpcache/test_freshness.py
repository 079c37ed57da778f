"""Freshness lifetime: RFC 9111 §4.2.1 and heuristics §4.2.2."""

import pytest

from proxy.httpcache.cache_control import parse_cache_control
from proxy.httpcache.dates import format_http_date
from proxy.httpcache.freshness import freshness_lifetime, has_explicit_expiration
from proxy.httpcache.headers import Headers

T = 1_700_000_000.0
DAY = 86400.0


def lifetime(headers: Headers, status: int = 200, cap: float = DAY) -> float:
    return freshness_lifetime(status, headers, parse_cache_control(headers), T, cap)


def date(offset: float) -> bytes:
    return format_http_date(T + offset)


def test_s_maxage_beats_max_age_and_expires_4_2_1() -> None:
    headers = [(b"cache-control", b"max-age=10, s-maxage=20"), (b"expires", date(30))]
    assert lifetime(headers) == 20


def test_max_age_beats_expires_4_2_1() -> None:
    assert lifetime([(b"cache-control", b"max-age=10"), (b"expires", date(30))]) == 10


def test_expires_minus_date_4_2_1() -> None:
    assert lifetime([(b"date", date(-5)), (b"expires", date(25))]) == 30


def test_expires_without_date_uses_response_time_4_2_1() -> None:
    assert lifetime([(b"expires", date(25))]) == 25


@pytest.mark.parametrize("expires", [b"0", b"-1", b"never", b""])
def test_invalid_expires_is_already_expired_5_3(expires: bytes) -> None:
    headers = [(b"expires", expires), (b"last-modified", date(-100 * DAY))]
    assert lifetime(headers) == 0


def test_conflicting_expires_lines_are_stale_4_2_1() -> None:
    assert lifetime([(b"expires", date(25)), (b"expires", date(50))]) == 0


def test_identical_expires_lines_agree_4_2_1() -> None:
    assert lifetime([(b"expires", date(25)), (b"expires", date(25))]) == 25


def test_expires_in_past_is_zero_not_negative_4_2_1() -> None:
    assert lifetime([(b"expires", date(-60))]) == 0


def test_heuristic_is_ten_percent_of_last_modified_age_4_2_2() -> None:
    assert lifetime([(b"date", date(0)), (b"last-modified", date(-1000))]) == 100


def test_heuristic_is_capped_4_2_2() -> None:
    old = [(b"last-modified", date(-365 * DAY))]
    assert lifetime(old) == DAY
    assert lifetime(old, cap=3600) == 3600


def test_no_heuristic_with_explicit_expiry_4_2_2() -> None:
    headers = [(b"cache-control", b"max-age=0"), (b"last-modified", date(-100 * DAY))]
    assert lifetime(headers) == 0


def test_no_heuristic_for_status_not_heuristically_cacheable_4_2_2() -> None:
    assert lifetime([(b"last-modified", date(-1000))], status=302) == 0


def test_public_allows_heuristic_for_any_status_4_2_2() -> None:
    headers = [(b"cache-control", b"public"), (b"last-modified", date(-1000))]
    assert lifetime(headers, status=302) == 100


def test_no_last_modified_no_heuristic_4_2_2() -> None:
    assert lifetime([(b"last-modified", b"garbage")]) == 0
    assert lifetime([]) == 0


def test_invalid_max_age_is_stale_even_with_expires_4_2_1() -> None:
    assert lifetime([(b"cache-control", b"max-age=1e3"), (b"expires", date(100))]) == 0


def test_explicit_expiration_presence_3() -> None:
    for headers in ([(b"expires", b"0")], [(b"cache-control", b"max-age=5")]):
        assert has_explicit_expiration(headers, parse_cache_control(headers))
    assert not has_explicit_expiration([], parse_cache_control([]))
