"""Revalidation: RFC 9111 §4.3.1, §4.3.4 and header update §3.2."""

from proxy.httpcache.dates import format_http_date
from proxy.httpcache.entry import Entry
from proxy.httpcache.validation import freshen, revalidation_headers

T = 1_700_000_000.0
LAST_MODIFIED = format_http_date(T - 1000)


def entry(*headers: tuple[bytes, bytes]) -> Entry:
    return Entry(200, headers, b"body", T - 1, T, ((b"accept", b"a"),))


STORED = entry(
    (b"etag", b'"v1"'),
    (b"last-modified", LAST_MODIFIED),
    (b"cache-control", b"max-age=60"),
    (b"content-length", b"4"),
    (b"x-old", b"1"),
    (b"date", format_http_date(T)),
)


def test_conditional_request_from_validators_4_3_1() -> None:
    request = [
        (b"accept", b"a"),
        (b"if-none-match", b'"client"'),
        (b"if-modified-since", b"x"),
        (b"if-match", b'"m"'),
        (b"range", b"bytes=0-1"),
    ]
    assert revalidation_headers(request, STORED) == [
        (b"accept", b"a"),
        (b"if-none-match", b'"v1"'),
        (b"if-modified-since", LAST_MODIFIED),
    ]


def test_no_validators_no_conditions_4_3_1() -> None:
    assert revalidation_headers([(b"if-none-match", b"*")], entry()) == []


def test_304_replaces_stored_fields_except_content_length_3_2() -> None:
    new_date = format_http_date(T + 100)
    merged = freshen(
        STORED,
        [
            (b"etag", b'"v1"'),
            (b"cache-control", b"max-age=120"),
            (b"content-length", b"0"),
            (b"connection", b"x-hop"),
            (b"x-hop", b"1"),
            (b"set-cookie", b"s=1"),
            (b"date", new_date),
        ],
        T + 99,
        T + 100,
    )
    assert merged is not None
    headers = dict(merged.headers)
    assert headers[b"cache-control"] == b"max-age=120"
    assert headers[b"content-length"] == b"4"
    assert headers[b"date"] == new_date
    assert headers[b"x-old"] == b"1"
    assert b"x-hop" not in headers
    assert b"set-cookie" not in headers
    assert [name for name, _ in merged.headers].count(b"cache-control") == 1
    assert (merged.request_time, merged.response_time) == (T + 99, T + 100)
    assert (merged.body, merged.vary, merged.status) == (STORED.body, STORED.vary, 200)


def test_304_without_date_gets_receipt_time_rfc9110_6_6_1() -> None:
    merged = freshen(STORED, [], T + 99, T + 100)
    assert merged is not None
    assert dict(merged.headers)[b"date"] == format_http_date(T + 100)


def test_304_strong_etag_must_match_strongly_4_3_4() -> None:
    assert freshen(STORED, [(b"etag", b'"v2"')], T, T) is None
    weak_stored = entry((b"etag", b'W/"v1"'))
    assert freshen(weak_stored, [(b"etag", b'"v1"')], T, T) is None


def test_304_weak_etag_matches_weakly_4_3_4() -> None:
    assert freshen(STORED, [(b"etag", b'W/"v1"')], T, T) is not None
    assert freshen(STORED, [(b"etag", b'W/"v2"')], T, T) is None


def test_304_etag_but_entry_has_none_4_3_4() -> None:
    assert freshen(entry(), [(b"etag", b'"v1"')], T, T) is None
    assert freshen(STORED, [(b"etag", b"garbage")], T, T) is None


def test_304_last_modified_must_match_without_etag_4_3_4() -> None:
    assert freshen(STORED, [(b"last-modified", LAST_MODIFIED)], T, T) is not None
    other = format_http_date(T - 5)
    assert freshen(STORED, [(b"last-modified", other)], T, T) is None


def test_304_restarts_the_age_instead_of_keeping_the_stored_one_4_2_3() -> None:
    """An entry stored with Age: 500 and max-age=60 is stale; after a 304 its age starts
    again from the 304 (its own Age, or none), so it is fresh until the next expiry."""

    stale = entry(*STORED.headers, (b"age", b"500"))
    merged = freshen(stale, [(b"date", format_http_date(T + 100))], T + 100, T + 100)
    assert merged is not None
    assert b"age" not in dict(merged.headers)
    assert merged.age_at(T + 110) == 10
    with_age = freshen(
        stale, [(b"age", b"5"), (b"date", format_http_date(T + 100))], T + 100, T + 100
    )
    assert with_age is not None
    assert dict(with_age.headers)[b"age"] == b"5"
    assert with_age.age_at(T + 110) == 15
