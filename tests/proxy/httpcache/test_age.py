"""Age calculation: RFC 9111 §4.2.3 and the Age field §5.1."""

from proxy.httpcache.age import (
    age_value,
    apparent_age,
    corrected_age_value,
    corrected_initial_age,
    current_age,
    date_value,
    resident_time,
    response_delay,
)
from proxy.httpcache.dates import format_http_date
from proxy.httpcache.entry import Entry

T = 1_700_000_000.0


def test_apparent_age_never_negative_4_2_3() -> None:
    assert apparent_age(date_value=T - 5, response_time=T) == 5
    assert apparent_age(date_value=T + 30, response_time=T) == 0


def test_response_delay_and_corrected_age_value_4_2_3() -> None:
    assert response_delay(request_time=T - 2, response_time=T) == 2
    assert corrected_age_value(age_value=10, request_time=T - 2, response_time=T) == 12


def test_corrected_initial_age_is_the_larger_estimate_4_2_3() -> None:
    assert corrected_initial_age(T - 100, 10, T - 2, T) == 100
    assert corrected_initial_age(T - 1, 10, T - 2, T) == 12


def test_current_age_adds_resident_time_4_2_3() -> None:
    assert resident_time(response_time=T, now=T + 40) == 40
    assert current_age(T - 1, 10, T - 2, T, T + 40) == 52


def test_age_field_first_member_5_1() -> None:
    assert age_value([(b"age", b"7, 9")]) == 7
    assert age_value([(b"age", b"7"), (b"age", b"9")]) == 7


def test_invalid_age_field_ignored_5_1() -> None:
    assert age_value([(b"age", b"-3")]) == 0
    assert age_value([(b"age", b"1.5")]) == 0
    assert age_value([]) == 0


def test_age_field_overflow_clamps_1_2_2() -> None:
    assert age_value([(b"age", b"99999999999999999999")]) == 2**31


def test_missing_or_invalid_date_uses_response_time() -> None:
    assert date_value([], T) == T
    assert date_value([(b"date", b"yesterday")], T) == T
    assert date_value([(b"date", format_http_date(T - 60))], T) == T - 60


def test_entry_age_4_2_3() -> None:
    entry = Entry(
        200,
        ((b"date", format_http_date(T - 3)), (b"age", b"20")),
        b"",
        request_time=T - 1,
        response_time=T,
    )
    assert entry.age_at(T + 100) == 121
