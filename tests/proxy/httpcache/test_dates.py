"""HTTP-date parsing and formatting: RFC 9110 §5.6.7."""

import calendar
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.httpcache.dates import MAX_TIMESTAMP, MIN_TIMESTAMP, format_http_date, parse_http_date

NOW = calendar.timegm((2025, 6, 1, 0, 0, 0))
EXAMPLE = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        b"Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        b"Sun Nov  6 08:49:37 1994",  # obsolete asctime
        b"Sun Nov 06 08:49:37 1994",
        b"  Sun, 06 Nov 1994 08:49:37 GMT ",
    ],
)
def test_three_formats_accepted_5_6_7(value: bytes) -> None:
    assert parse_http_date(value, NOW) == EXAMPLE


def test_rfc850_two_digit_year_50_year_rule_5_6_7() -> None:
    # From 2025, "75" is within 50 years ahead; "76" would be further, so it is 1976.
    assert parse_http_date(b"Monday, 01-Jan-75 00:00:00 GMT", NOW) == calendar.timegm(
        (2075, 1, 1, 0, 0, 0)
    )
    assert parse_http_date(b"Thursday, 01-Jan-76 00:00:00 GMT", NOW) == calendar.timegm(
        (1976, 1, 1, 0, 0, 0)
    )
    assert parse_http_date(b"Saturday, 01-Jan-00 00:00:00 GMT", NOW) == calendar.timegm(
        (2000, 1, 1, 0, 0, 0)
    )


def test_rfc850_year_near_century_end_5_6_7() -> None:
    now = calendar.timegm((2099, 6, 1, 0, 0, 0))
    assert parse_http_date(b"Monday, 01-Jan-01 00:00:00 GMT", now) == calendar.timegm(
        (2101, 1, 1, 0, 0, 0)
    )


def test_leap_second_accepted_5_6_7() -> None:
    assert parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT", NOW) == calendar.timegm(
        (2017, 1, 1, 0, 0, 0)
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"0",
        b"-1",
        b"Sun, 06 Nov 1994 08:49:37 UTC",
        b"Sun, 06 Nov 1994 08:49:37 gmt",
        b"sun, 06 Nov 1994 08:49:37 GMT",
        b"Sun, 6 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 94 08:49:37 GMT",
        b"Sun, 31 Feb 1994 08:49:37 GMT",
        b"Tue, 29 Feb 2100 00:00:00 GMT",
        b"Sun, 06 Nov 1994 24:00:00 GMT",
        b"Sun, 06 Nov 1994 08:60:00 GMT",
        b"Sun, 06 Nov 1994 08:49:61 GMT",
        b"Sun, 06 Nov 1994 8:49:37 GMT",
        b"Sun, 06 Foo 1994 08:49:37 GMT",
        b"Sun, 06 Nov 0000 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:37 GMT extra",
        b"Sun 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-1994 08:49:37 GMT",
        b"Sunday, 06 Nov 94 08:49:37 GMT",
        b"Sun Nov 106 08:49:37 1994",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT".encode(),
        b"Sun, 06 Nov 1994 08:49:37 GMT" * 1000,
    ],
)
def test_invalid_dates_return_none_5_6_7(value: bytes) -> None:
    assert parse_http_date(value, NOW) is None


def test_format_is_imf_fixdate_5_6_7() -> None:
    assert format_http_date(EXAMPLE) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(EXAMPLE + 0.999) == b"Sun, 06 Nov 1994 08:49:37 GMT"


def test_format_clamps_to_four_digit_years() -> None:
    assert format_http_date(10**15) == b"Fri, 31 Dec 9999 23:59:59 GMT"
    assert format_http_date(-(10**15)) == b"Mon, 01 Jan 0001 00:00:00 GMT"


_timestamps = st.integers(MIN_TIMESTAMP, MAX_TIMESTAMP)


@given(_timestamps)
def test_format_parse_round_trip(timestamp: int) -> None:
    assert parse_http_date(format_http_date(timestamp), NOW) == timestamp


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    parse_http_date(value, NOW)


@given(st.text(max_size=64))
def test_arbitrary_text_never_raises(value: str) -> None:
    parse_http_date(value.encode("utf-8", "surrogatepass"), NOW)


_YEAR = 365 * 86400


@given(
    st.integers(calendar.timegm((100, 1, 1, 0, 0, 0)), calendar.timegm((9899, 12, 31, 0, 0, 0))),
    st.integers(-48, 48),
)
def test_three_formats_agree(timestamp: int, years_to_now: int) -> None:
    """Each format of one instant parses to it, with ``now`` within 48 years so the
    RFC 850 two-digit year resolves to the right century."""
    t = time.gmtime(timestamp)
    clock = time.strftime("%H:%M:%S", t)
    imf = format_http_date(timestamp).decode()
    asctime = time.strftime(f"%a %b %d {clock} ", t) + f"{t.tm_year:04d}"
    rfc850 = time.strftime(f"%A, %d-%b-{t.tm_year % 100:02d} {clock} GMT", t)
    now = timestamp + years_to_now * _YEAR
    parsed = {parse_http_date(text.encode(), now) for text in (imf, asctime, rfc850)}
    assert parsed == {timestamp}
