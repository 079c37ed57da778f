"""Client conditionals answered from the cache: RFC 9111 §4.3.2, RFC 9110 §13."""

import pytest

from proxy.httpcache.conditional import is_not_modified, not_modified_headers
from proxy.httpcache.dates import format_http_date
from proxy.httpcache.entry import Entry
from proxy.httpcache.headers import Headers

T = 1_700_000_000.0


def entry(*headers: tuple[bytes, bytes]) -> Entry:
    return Entry(200, headers, b"body", T, T)


TAGGED = entry((b"etag", b'W/"v1"'), (b"last-modified", format_http_date(T - 100)))


@pytest.mark.parametrize("value", [b'"v1"', b'W/"v1"', b'"v0", W/"v1"', b' "x,y" ,"v1"', b"*"])
def test_if_none_match_weak_comparison_13_1_2(value: bytes) -> None:
    assert is_not_modified([(b"if-none-match", value)], TAGGED)


@pytest.mark.parametrize("value", [b'"v2"', b"v1", b'"v1', b'"v1" junk', b'*, "v1"', b""])
def test_if_none_match_mismatch_or_malformed_13_1_2(value: bytes) -> None:
    assert not is_not_modified([(b"if-none-match", value)], TAGGED)


def test_if_none_match_lines_combine() -> None:
    request = [(b"if-none-match", b'"a"'), (b"if-none-match", b'"v1"')]
    assert is_not_modified(request, TAGGED)


def test_if_none_match_star_with_entry_but_no_etag_13_1_2() -> None:
    assert is_not_modified([(b"if-none-match", b"*")], entry())
    assert not is_not_modified([(b"if-none-match", b'"v1"')], entry())


def test_if_none_match_takes_precedence_over_if_modified_since_13_2_2() -> None:
    request: Headers = [
        (b"if-none-match", b'"other"'),
        (b"if-modified-since", format_http_date(T)),
    ]
    assert not is_not_modified(request, TAGGED)


def test_if_modified_since_uses_last_modified_4_3_2() -> None:
    assert is_not_modified([(b"if-modified-since", format_http_date(T - 100))], TAGGED)
    assert not is_not_modified([(b"if-modified-since", format_http_date(T - 101))], TAGGED)


def test_if_modified_since_falls_back_to_date_then_receipt_4_3_2() -> None:
    dated = entry((b"date", format_http_date(T - 50)))
    assert is_not_modified([(b"if-modified-since", format_http_date(T - 50))], dated)
    assert not is_not_modified([(b"if-modified-since", format_http_date(T - 51))], dated)
    assert is_not_modified([(b"if-modified-since", format_http_date(T))], entry())
    assert not is_not_modified([(b"if-modified-since", format_http_date(T - 1))], entry())


def test_if_modified_since_invalid_or_repeated_ignored_13_1_3() -> None:
    since = format_http_date(T)
    assert not is_not_modified([(b"if-modified-since", b"yesterday")], TAGGED)
    assert not is_not_modified([(b"if-modified-since", since)] * 2, TAGGED)


def test_no_conditionals_no_304() -> None:
    assert not is_not_modified([(b"if-match", b'"v1"')], TAGGED)


def test_304_carries_listed_fields_15_4_5() -> None:
    headers = [
        (b"content-type", b"text/html"),
        (b"content-length", b"4"),
        (b"etag", b'"1"'),
        (b"cache-control", b"max-age=5"),
        (b"age", b"3"),
        (b"vary", b"accept"),
    ]
    assert not_modified_headers(headers) == [
        (b"etag", b'"1"'),
        (b"cache-control", b"max-age=5"),
        (b"age", b"3"),
        (b"vary", b"accept"),
    ]
