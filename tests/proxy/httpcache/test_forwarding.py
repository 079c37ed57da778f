"""What reaches the origin: forwarding.upstream_headers and not_forwarded."""

import pytest

from proxy.httpcache.forwarding import UNKEYED, VIA, not_forwarded, upstream_headers

POISONING = [
    (b"forwarded", b"host=evil.example;proto=https"),
    (b"x-forwarded-host", b"evil.example"),
    (b"x-forwarded-server", b"evil.example"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-port", b"8443"),
    (b"x-forwarded-scheme", b"https"),
    (b"x-host", b"evil.example"),
    (b"x-original-url", b"/admin"),
    (b"x-rewrite-url", b"/admin"),
    (b"x-http-method-override", b"DELETE"),
]


def test_every_unkeyed_field_is_dropped_by_default() -> None:
    assert {name for name, _ in POISONING} == UNKEYED
    out = upstream_headers(
        [(b"host", b"h"), (b"accept", b"*/*"), *POISONING], "10.0.0.1", True, not_forwarded(())
    )
    assert out == [
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"via", VIA),
    ]


def test_forward_header_lets_one_through_in_any_case() -> None:
    never = not_forwarded(["X-Forwarded-Proto"])
    out = upstream_headers(POISONING, None, True, never)
    assert [name for name, _ in out] == [b"x-forwarded-proto", b"via"]


@pytest.mark.parametrize("name", [b"host", b"content-length"])
def test_framing_and_host_are_never_forwarded(name: bytes) -> None:
    never = not_forwarded(["host", "content-length"])
    out = upstream_headers([(name, b"1")], None, False, never)
    assert (name, b"1") not in out


def test_the_client_forwarded_for_is_appended_to() -> None:
    out = upstream_headers([(b"x-forwarded-for", b"1.1.1.1")], "2.2.2.2", False, not_forwarded(()))
    assert (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2") in out
