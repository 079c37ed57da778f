"""Cache keys: RFC 9111 §2 and URI normalisation (RFC 3986 §6.2.3)."""

import pytest

from proxy.httpcache.key import cache_key, origin


def test_key_covers_method_scheme_host_target_2() -> None:
    assert (
        cache_key(b"GET", b"https", b"example.com", b"/a?b=1") == b"GET https://example.com/a?b=1"
    )
    keys = {
        cache_key(b"GET", b"https", b"example.com", b"/a"),
        cache_key(b"GET", b"http", b"example.com", b"/a"),
        cache_key(b"GET", b"https", b"example.org", b"/a"),
        cache_key(b"GET", b"https", b"example.com", b"/a?"),
    }
    assert len(keys) == 4


def test_head_maps_to_get_key() -> None:
    assert cache_key(b"HEAD", b"https", b"h", b"/") == cache_key(b"GET", b"https", b"h", b"/")


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get"])
def test_other_methods_have_no_key(method: bytes) -> None:
    assert cache_key(method, b"https", b"h", b"/") is None


@pytest.mark.parametrize(
    ("scheme", "host", "expected"),
    [
        (b"HTTPS", b"Example.COM:443", b"https://example.com"),
        (b"http", b"example.com:80", b"http://example.com"),
        (b"http", b"example.com:", b"http://example.com"),
        (b"http", b"example.com:443", b"http://example.com:443"),
        (b"https", b"[::1]", b"https://[::1]"),
        (b"https", b"[::1]:443", b"https://[::1]"),
        (b"https", b"[::1]:8443", b"https://[::1]:8443"),
    ],
)
def test_origin_normalised(scheme: bytes, host: bytes, expected: bytes) -> None:
    assert origin(scheme, host) == expected
