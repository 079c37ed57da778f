"""Header list helpers; hop-by-hop removal per RFC 9110 §7.6.1."""

from proxy.httpcache.headers import HOP_BY_HOP, first, strip_hop_by_hop, tokens


def test_first_and_tokens() -> None:
    headers = [(b"vary", b"Accept , ,accept-Encoding"), (b"vary", b"x-a"), (b"etag", b'"1"')]
    assert first(headers, b"etag") == b'"1"'
    assert first(headers, b"age") is None
    assert list(tokens(headers, b"vary")) == [b"accept", b"accept-encoding", b"x-a"]


def test_hop_by_hop_and_connection_listed_fields_removed_7_6_1() -> None:
    headers = [(name, b"x") for name in sorted(HOP_BY_HOP)] + [
        (b"connection", b"X-Secret, close"),
        (b"x-secret", b"1"),
        (b"content-type", b"text/plain"),
    ]
    assert strip_hop_by_hop(headers) == [(b"content-type", b"text/plain")]


def test_invalid_field_names_the_first_bad_line() -> None:
    from proxy.httpcache.headers import invalid_field

    assert invalid_field([(b"x-a", b"value with\ttab and \x80obs-text")]) is None
    assert invalid_field([(b"x-a", b"ok"), (b"x-b", b"split\r\nset-cookie: a=b")]) == b"x-b"
    assert invalid_field([(b"x-a", b"\x00")]) == b"x-a"
    assert invalid_field([(b"x-a", b"\x7f")]) == b"x-a"
    assert invalid_field([(b"bad name", b"v")]) == b"bad name"
    assert invalid_field([(b"", b"v")]) == b""
