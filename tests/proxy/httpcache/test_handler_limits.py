"""Requirement 7: body limits, versioned entries, X-Cache, Via and X-Forwarded-For."""

from __future__ import annotations

import socket

import pytest

from proxy.httpcache.entry import MAGIC, VERSION
from proxy.httpcache.key import origin, uri_key
from proxy.httpcache.storage import digest
from proxy.keys import CACHE_PREFIX
from tests.proxy.httpcache.conftest import Stack, seen_headers
from tests.support.servers import LOOPBACK

MAX_AGE = [["cache-control", "max-age=60"]]
LIMIT = 1024 * 1024


def memcached_set(port: int, key: bytes, value: bytes) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"set %s 0 60 %d\r\n%s\r\n" % (key, len(value), value))
        assert sock.recv(100) == b"STORED\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_stream_through_uncached(
    stack: Stack, name: str, chunked: bool
) -> None:
    stack.origin.configure(name, headers=MAX_AGE, size=LIMIT + 1000, chunked=chunked)
    # The second request is a hit-for-pass: too large to store, so not worth waiting for.
    for result in ("MISS", "PASS"):
        response = stack.client.get(f"/{name}")
        assert (response.status_code, response.headers["x-cache"]) == (200, result)
        assert response.content == b"x" * (LIMIT + 1000)
    assert stack.origin.count(name) == 2


def test_bodies_at_the_limit_boundary_are_cached_when_they_fit(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=MAX_AGE, size=512 * 1024, chunked=True)
    stack.client.get(f"/{name}")
    hit = stack.client.get(f"/{name}")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["content-length"] == str(512 * 1024)
    assert hit.content == b"x" * (512 * 1024)


@pytest.mark.parametrize(
    "stored",
    [b"garbage", MAGIC + bytes([VERSION + 1]) + b"\0" * 60, MAGIC + bytes([VERSION]) + b"\0" * 3],
    ids=["garbage", "future-version", "truncated"],
)
def test_unreadable_entries_are_misses(stack: Stack, name: str, stored: bytes) -> None:
    stack.origin.configure(name, headers=MAX_AGE)
    slot = CACHE_PREFIX + digest(uri_key(origin(b"http", stack.origin.authority.encode()),
                                         f"/{name}".encode()))  # fmt: skip
    for cache in stack.caches:
        memcached_set(cache.port, slot, stored)
    response = stack.client.get(f"/{name}")
    assert (response.status_code, response.headers["x-cache"]) == (200, "MISS")
    # The fetch overwrote the unreadable entry.
    assert stack.client.get(f"/{name}").headers["x-cache"] == "HIT"


def test_via_and_x_forwarded_for(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[*MAX_AGE, ["via", "1.1 origin-edge"]])
    response = stack.client.get(f"/{name}", headers={"x-forwarded-for": "203.0.113.9"})
    assert response.headers.get_list("via") == ["1.1 origin-edge", "1.1 ringleader"]
    seen = seen_headers(stack, name)
    assert seen["x-forwarded-for"] == f"203.0.113.9, {LOOPBACK}"
    assert seen["via"] == "1.1 ringleader"
    assert seen["host"] == stack.origin.authority
