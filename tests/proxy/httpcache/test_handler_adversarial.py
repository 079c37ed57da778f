"""Requirement 9, adversarial inputs: each gets a 4xx or a safe pass-through, and nothing
a client sends can poison what the cache serves to another host or client."""

from __future__ import annotations

import pytest

from tests.proxy.httpcache.conftest import Stack, raw_request, seen_headers

MAX_AGE = [["cache-control", "max-age=60"]]


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply[9:12])


def request(name: str, *lines: str, method: str = "GET", body: bytes = b"") -> bytes:
    head = "\r\n".join([f"{method} /{name} HTTP/1.1", *lines, "Connection: close"])
    return head.encode() + b"\r\n\r\n" + body


@pytest.mark.parametrize("size", [40_000, 300_000])
def test_huge_header_is_431(stack: Stack, name: str, size: int) -> None:
    reply = raw_request(stack.proxy.url, request(name, "Host: a", f"X-Big: {'b' * size}"))
    assert status_of(reply) == 431
    assert stack.origin.count(name) == 0


def test_many_headers_are_431(stack: Stack, name: str) -> None:
    lines = [f"X-H{i}: {'v' * 40}" for i in range(1000)]
    assert status_of(raw_request(stack.proxy.url, request(name, "Host: a", *lines))) == 431


def test_malformed_cache_control_is_harmless(stack: Stack, name: str) -> None:
    stack.origin.configure(
        name, headers=[["cache-control", 'max-age="60, , ,=;;no-store=,s-maxage=-1, private="']]
    )
    for request_cc in ('max-stale=", only-if-cached=?', "max-age=1e9, min-fresh=-5", ",,,"):
        response = stack.client.get(f"/{name}", headers={"cache-control": request_cc})
        assert response.status_code in (200, 504)
    assert stack.client.get(f"/{name}").status_code == 200


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked", "Content-Length: 5"],
        ["Content-Length: 5", "Transfer-Encoding: xchunked"],
        ["Content-Length: 5", "Content-Length: 6"],
    ],
    ids=["CL.TE", "TE.CL", "CL.TE-obfuscated", "CL.CL"],
)
def test_request_smuggling_shapes_are_refused(stack: Stack, name: str, framing: list[str]) -> None:
    smuggled = f"0\r\n\r\nGET /{name}smuggled HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    reply = raw_request(
        stack.proxy.url, request(name, "Host: a", *framing, method="POST", body=smuggled)
    )
    assert 400 <= status_of(reply) < 500
    assert stack.origin.count(name) == 0
    assert stack.origin.count(f"{name}smuggled") == 0


@pytest.mark.parametrize(
    "host_lines",
    [[], ["Host: a", "Host: b"], ["Host: bad host"], ["Host: "]],
    ids=["missing", "repeated", "space", "empty"],
)
def test_invalid_host_is_400(stack: Stack, name: str, host_lines: list[str]) -> None:
    reply = raw_request(stack.proxy.url, request(name, *host_lines))
    assert status_of(reply) == 400
    assert stack.origin.count(name) == 0


def test_dot_segments_are_400(stack: Stack, name: str) -> None:
    reply = raw_request(stack.proxy.url, request(f"{name}/../admin", "Host: a"))
    assert status_of(reply) == 400


def test_foreign_host_cannot_poison_entries(stack: Stack, name: str) -> None:
    """The key and the upstream Host are the origin's, whatever Host the client sends,
    and X-Forwarded-Host (an unkeyed input) is not forwarded."""
    stack.origin.configure(name, headers=MAX_AGE, echo="x-forwarded-host")
    evil = raw_request(
        stack.proxy.url,
        request(name, "Host: evil.example", "X-Forwarded-Host: evil.example"),
    )
    assert status_of(evil) == 200
    assert evil.endswith(f"body of {name} -".encode())
    seen = seen_headers(stack, name)
    assert seen["host"] == stack.origin.authority
    honest = stack.client.get(f"/{name}")
    assert (honest.headers["x-cache"], honest.text) == ("HIT", f"body of {name} -")


def test_absolute_form_target_uses_the_origin_key(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=MAX_AGE, body="genuine")
    payload = (
        f"GET http://evil.example/{name} HTTP/1.1\r\nHost: evil.example\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    reply = raw_request(stack.proxy.url, payload)
    assert status_of(reply) == 200
    assert reply.endswith(b"genuine")
    assert stack.client.get(f"/{name}").headers["x-cache"] == "HIT"
    assert stack.origin.count(name) == 1


def test_client_cannot_forge_its_forwarded_address(stack: Stack, name: str) -> None:
    stack.origin.configure(name)
    stack.client.get(f"/{name}", headers={"x-forwarded-for": "10.0.0.1"})
    seen = seen_headers(stack, name)
    # The client's claim is kept, and the real peer is appended after it.
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
