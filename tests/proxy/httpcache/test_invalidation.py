"""Invalidation: RFC 9111 §4.4."""

import pytest

from proxy.httpcache.invalidation import invalidated_keys
from proxy.httpcache.key import cache_key


def keys(
    *headers: tuple[bytes, bytes], method: bytes = b"POST", status: int = 200
) -> tuple[bytes, ...]:
    return invalidated_keys(method, status, b"https", b"example.com", b"/items?x=1", headers)


def key(target: bytes, host: bytes = b"example.com") -> bytes | None:
    return cache_key(b"GET", b"https", host, target)


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"PURGEX"])
def test_unsafe_method_invalidates_target_4_4(method: bytes) -> None:
    assert keys(method=method) == (key(b"/items?x=1"),)


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
def test_safe_methods_invalidate_nothing_4_4(method: bytes) -> None:
    assert keys(method=method) == ()


@pytest.mark.parametrize("status", [100, 400, 404, 500, 503])
def test_error_responses_invalidate_nothing_4_4(status: int) -> None:
    assert keys(status=status) == ()


@pytest.mark.parametrize("status", [200, 201, 204, 301, 303, 399])
def test_non_error_responses_invalidate_4_4(status: int) -> None:
    assert keys(status=status) == (key(b"/items?x=1"),)


def test_same_origin_location_and_content_location_4_4() -> None:
    result = keys(
        (b"location", b"/items/7"),
        (b"content-location", b"https://EXAMPLE.com:443/items/7/v?a#frag"),
    )
    assert result == (key(b"/items?x=1"), key(b"/items/7"), key(b"/items/7/v?a"))


def test_relative_reference_resolved_against_target_4_4() -> None:
    assert keys((b"location", b"7"))[1:] == (key(b"/7"),)


@pytest.mark.parametrize(
    "location",
    [
        b"https://other.example/items/7",
        b"http://example.com/items/7",
        b"https://example.com:8443/items/7",
        b"//other.example/x",
        b"https://user@other.example/x",
    ],
)
def test_cross_origin_uri_not_invalidated_4_4(location: bytes) -> None:
    assert keys((b"location", location), (b"content-location", location)) == (key(b"/items?x=1"),)


@pytest.mark.parametrize(
    "location", [b"http://[::1", b"https://[::1/x", b"https://example.com:99999/"]
)
def test_malformed_location_ignored(location: bytes) -> None:
    assert keys((b"location", location)) == (key(b"/items?x=1"),)


def test_duplicate_keys_reported_once() -> None:
    assert keys((b"location", b"/items?x=1")) == (key(b"/items?x=1"),)
