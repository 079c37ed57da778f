"""Single byte ranges answered from a stored 200 (RFC 9110 §14, §13.1.5)."""

import pytest

from proxy.httpcache.ranges import UNSATISFIABLE, byte_range, if_range_allows


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"bytes=0-3", (0, 3)),
        (b"bytes=2-", (2, 9)),
        (b"bytes=-4", (6, 9)),
        (b"bytes=-40", (0, 9)),
        (b"bytes=5-100", (5, 9)),
        (b"BYTES = 1-1", (1, 1)),
        (b"bytes=10-", UNSATISFIABLE),
        (b"bytes=-0", UNSATISFIABLE),
        (b"bytes=4-2", None),
        (b"bytes=0-1,3-4", None),
        (b"items=0-1", None),
        (b"bytes=a-b", None),
        (b"bytes=-", None),
        (b"bytes", None),
    ],
)
def test_byte_range_of_ten_bytes(value: bytes, expected: tuple[int, int] | None) -> None:
    assert byte_range(value, 10) == expected


@pytest.mark.parametrize("value", [b"bytes=-5", b"bytes=0-", b"bytes=0-0"])
def test_no_range_of_an_empty_representation_is_satisfiable(value: bytes) -> None:
    assert byte_range(value, 0) == UNSATISFIABLE


def test_if_range_needs_a_strong_etag_match_or_the_exact_date() -> None:
    stored = [(b"etag", b'"v1"'), (b"last-modified", b"Sat, 05 Dec 2026 10:00:00 GMT")]
    assert if_range_allows([], stored)
    assert if_range_allows([(b"if-range", b'"v1"')], stored)
    assert not if_range_allows([(b"if-range", b'"v2"')], stored)
    assert not if_range_allows([(b"if-range", b'W/"v1"')], stored)
    assert if_range_allows([(b"if-range", b"Sat, 05 Dec 2026 10:00:00 GMT")], stored)
    assert not if_range_allows([(b"if-range", b"Sat, 05 Dec 2026 09:00:00 GMT")], stored)
    assert not if_range_allows([(b"if-range", b'"v1"')], [(b"etag", b'W/"v1"')])
