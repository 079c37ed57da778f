"""Variant selection: RFC 9111 §4.1."""

from proxy.httpcache.vary import normalised_value, vary_matches, vary_names, vary_record


def test_names_lowercased_deduplicated_across_lines_4_1() -> None:
    headers = [(b"vary", b"Accept-Encoding, accept"), (b"vary", b"ACCEPT-ENCODING")]
    assert vary_names(headers) == (b"accept-encoding", b"accept")


def test_star_never_matches_4_1() -> None:
    assert vary_names([(b"vary", b"accept"), (b"vary", b"*")]) is None


def test_values_normalised_and_lines_combined_4_1() -> None:
    one = [(b"accept-language", b"en-GB,\t fr;q=0.5")]
    two = [(b"accept-language", b" en-GB "), (b"accept-language", b"fr;q=0.5")]
    assert normalised_value(one, b"accept-language") == normalised_value(two, b"accept-language")
    assert normalised_value(one, b"accept-language") == b"en-GB,fr;q=0.5"


def test_values_are_compared_case_sensitively() -> None:
    record = vary_record([b"x-mode"], [(b"x-mode", b"Dark")])
    assert not vary_matches(record, [(b"x-mode", b"dark")])


def test_match_requires_same_values_4_1() -> None:
    record = vary_record([b"accept-encoding"], [(b"accept-encoding", b"gzip, br")])
    assert vary_matches(record, [(b"accept-encoding", b"gzip,br")])
    assert not vary_matches(record, [(b"accept-encoding", b"br, gzip")])
    assert not vary_matches(record, [])


def test_absent_matches_only_absent_4_1() -> None:
    record = vary_record([b"accept-encoding"], [])
    assert vary_matches(record, [(b"user-agent", b"x")])
    assert not vary_matches(record, [(b"accept-encoding", b"")])


def test_no_vary_matches_everything() -> None:
    assert vary_matches((), [(b"accept", b"anything")])


def test_accept_encoding_is_reduced_to_a_bucket() -> None:
    from proxy.httpcache.vary import accept_encoding_bucket

    def bucket(value: bytes) -> bytes | None:
        return accept_encoding_bucket([(b"accept-encoding", value)])

    assert bucket(b"gzip, deflate, br, zstd") == b"br"
    assert bucket(b"gzip, deflate") == b"gzip"
    assert bucket(b"GZip;q=0.8") == b"gzip"
    assert bucket(b"br;q=0, gzip;q=0.5") == b"gzip"
    assert bucket(b"br;q=0.000, gzip;q=0") is None
    assert bucket(b"*") == b"gzip"
    assert bucket(b"deflate, identity") is None
    assert accept_encoding_bucket([]) is None


def test_the_forwarded_view_drops_what_connection_names_and_buckets_encoding() -> None:
    """A field the origin never sees cannot select a variant (issue: a header named in
    Connection was stripped before forwarding but still recorded for Vary)."""
    from proxy.httpcache.vary import forwarded_view

    view = forwarded_view(
        [
            (b"connection", b"x-variant"),
            (b"x-variant", b"evil"),
            (b"keep-alive", b"5"),
            (b"accept-encoding", b"gzip, br"),
            (b"accept-language", b"en"),
        ]
    )
    assert view == [(b"accept-language", b"en"), (b"accept-encoding", b"br")]
    record = vary_record((b"x-variant",), view)
    assert record == ((b"x-variant", None),)
