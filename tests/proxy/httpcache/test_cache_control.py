"""Cache-Control parsing: RFC 9111 §5.2 and delta-seconds §1.2.2."""

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.httpcache.cache_control import (
    DELTA_MAX,
    EMPTY,
    CacheControl,
    parse_cache_control,
    parse_delta_seconds,
)


def cc(*lines: bytes) -> CacheControl:
    return parse_cache_control([(b"cache-control", line) for line in lines])


def test_no_field_gives_empty() -> None:
    assert parse_cache_control([(b"content-type", b"text/plain")]) is EMPTY


def test_directives_are_case_insensitive_5_2() -> None:
    assert cc(b"Max-Age=5, NO-CACHE, Public") == CacheControl(max_age=5, no_cache=True, public=True)


def test_lines_combine_into_one_list_5_2() -> None:
    assert cc(b"max-age=5", b"must-revalidate") == CacheControl(max_age=5, must_revalidate=True)


def test_unknown_directives_ignored_5_2_3() -> None:
    assert cc(b'community=UCI, x-foo="bar,baz", max-age=3') == CacheControl(max_age=3)


def test_quoted_argument_accepted_5_2() -> None:
    assert cc(b'max-age="10"').max_age == 10


def test_quoted_comma_does_not_split_5_2_2_4() -> None:
    parsed = cc(b'no-cache="set-cookie,x-a", max-age=7')
    assert parsed == CacheControl(no_cache=True, max_age=7)


def test_escaped_quote_inside_argument() -> None:
    assert cc(b'private="a\\",max-age=1", s-maxage=4') == CacheControl(private=True, s_maxage=4)


def test_bare_max_stale_means_any_5_2_1_2() -> None:
    assert cc(b"max-stale").max_stale == DELTA_MAX
    assert cc(b"max-stale=30").max_stale == 30


@pytest.mark.parametrize(
    "value",
    [
        b'max-age="10',
        b"max-age=-1",
        b"max-age=1e3",
        b"max-age=",
        b"max-age",
        b"max-age=10s",
        b"max-age=+5",
        b"max-age= 0x10",
        "max-age=\u0661".encode(),
    ],
)
def test_invalid_max_age_reads_as_stale_4_2_1(value: bytes) -> None:
    assert cc(value).max_age == 0


def test_overflowing_delta_clamps_to_2_31_1_2_2() -> None:
    assert cc(b"max-age=99999999999999999999").max_age == DELTA_MAX
    assert cc(b"s-maxage=2147483649").s_maxage == DELTA_MAX


def test_conflicting_duplicate_reads_as_stale_4_2_1() -> None:
    assert cc(b"max-age=60, max-age=120").max_age == 0
    assert cc(b"max-age=60", b"max-age=10").max_age == 0


def test_identical_duplicate_is_read_once_4_2_1() -> None:
    assert cc(b'max-age=60, max-age="60"').max_age == 60


@pytest.mark.parametrize("value", [b"", b",", b" , ,, ", b"=", b"=5", b'"', b'""', b"\x00\xff"])
def test_empty_and_lone_punctuation_parse_to_nothing(value: bytes) -> None:
    assert cc(value) == EMPTY


def test_unterminated_quote_swallows_the_rest() -> None:
    assert cc(b'no-cache="a, max-age=5') == CacheControl(no_cache=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"0", 0), (b"007", 7), (b"2147483648", DELTA_MAX), (b"0000000000000000000042", 42)],
)
def test_delta_seconds_1_2_2(value: bytes, expected: int) -> None:
    assert parse_delta_seconds(value) == expected


@pytest.mark.parametrize("value", [b"", b"-1", b"1.5", b" 1", "\u0663".encode()])
def test_delta_seconds_rejects_non_digits_1_2_2(value: bytes) -> None:
    assert parse_delta_seconds(value) is None


@pytest.mark.parametrize(
    "value",
    [
        b"max-age=" + b"9" * 1_000_000,
        b'no-cache="' + b'\\"' * 500_000 + b'"',
        b'"' * 1_000_000,
        b"," * 1_000_000,
        b'a="b",' * 200_000,
        b"\\" * 1_000_000 + b'"',
    ],
    ids=["long-digits", "escapes", "quotes", "commas", "many-quoted", "backslashes"],
)
def test_huge_values_take_bounded_time(value: bytes) -> None:
    started = time.perf_counter()
    cc(value)
    assert time.perf_counter() - started < 2.0


# Property tests -----------------------------------------------------------------

_DELTA = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "max-stale": "max_stale",
    "min-fresh": "min_fresh",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
}
_FLAGS = {
    "no-cache": "no_cache",
    "no-store": "no_store",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "must-understand": "must_understand",
    "only-if-cached": "only_if_cached",
}


@given(st.binary(max_size=300))
def test_never_raises_on_bytes(value: bytes) -> None:
    assert isinstance(cc(value), CacheControl)


@given(st.text(max_size=300))
def test_never_raises_on_text(value: str) -> None:
    assert isinstance(cc(value.encode("utf-8", "surrogatepass")), CacheControl)


@given(st.lists(st.sampled_from([*_DELTA, *_FLAGS, ",", '"', "=", "\\", " ", "1"]), max_size=40))
def test_never_raises_on_directive_fragments(parts: list[str]) -> None:
    assert isinstance(cc("".join(parts).encode()), CacheControl)


@given(
    st.dictionaries(st.sampled_from([*_DELTA, *_FLAGS]), st.integers(0, 10**12)),
    st.data(),
)
def test_well_formed_directives_round_trip(chosen: dict[str, int], data: st.DataObject) -> None:
    members = []
    expected: dict[str, Any] = {}
    for name, seconds in chosen.items():
        if name in _DELTA:
            argument = f'"{seconds}"' if data.draw(st.booleans()) else str(seconds)
            members.append(f"{name}={argument}")
            expected[_DELTA[name]] = min(seconds, DELTA_MAX)
        else:
            members.append(name)
            expected[_FLAGS[name]] = True
    separator = data.draw(st.sampled_from([",", ", ", " ,\t"]))
    assert cc(separator.join(members).upper().encode()) == CacheControl(**expected)


@given(st.sampled_from(sorted(_DELTA)), st.integers(0, 10**6), st.integers(0, 10**6))
def test_duplicated_delta_directive_documented_4_2_1(name: str, a: int, b: int) -> None:
    parsed = getattr(cc(f"{name}={a}, {name}={b}".encode()), _DELTA[name])
    assert parsed == (a if a == b else 0)


@given(st.sampled_from(sorted(_FLAGS)), st.integers(1, 5))
def test_duplicated_flag_is_idempotent(name: str, times: int) -> None:
    assert cc(", ".join([name] * times).encode()) == CacheControl(**{_FLAGS[name]: True})
