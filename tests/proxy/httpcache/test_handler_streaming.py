"""Streaming, cancellation and hit-for-pass, in front of the raw origin (which can send
a reply's chunks apart, `pause` seconds from each other, and counts a client that went
away before the last one as "aborted")."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx

from tests.proxy.httpcache.conftest import Stack
from tests.support.control_cluster import parse_metric
from tests.support.servers import wait_until

PAUSE = 1.0
"""Seconds between the origin's chunks: every bound below is a fraction or a multiple of
it, generous against scheduling noise on a loaded 2-core machine."""


def first_byte_seconds(stack: Stack, path: str) -> tuple[float, bytes, str]:
    """Seconds to the first body byte, the whole body, and X-Cache."""
    started = time.monotonic()
    with stack.client.stream("GET", path) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        elapsed = time.monotonic() - started
        return elapsed, first + b"".join(chunks), response.headers["x-cache"]


def test_the_first_byte_is_relayed_as_the_origin_sends_it(raw_stack: Stack, name: str) -> None:
    body = b"x" * 30  # three chunks of 10 bytes, PAUSE apart
    for suffix, policy in (("c", "max-age=60"), ("u", "no-store")):
        raw_stack.origin.configure(
            f"{name}{suffix}",
            headers=[["cache-control", policy]],
            size=len(body),
            chunked=True,
            pause=PAUSE,
        )
        elapsed, whole, result = first_byte_seconds(raw_stack, f"/{name}{suffix}")
        assert (whole, result) == (body, "MISS")
        assert elapsed < PAUSE, f"{policy}: first byte after {elapsed:.2f}s"
    # The cacheable one was copied while it streamed.
    hit = raw_stack.client.get(f"/{name}c")
    assert (hit.headers["x-cache"], hit.content) == ("HIT", body)


def read_first_chunk_and_hang_up(
    stack: Stack, path: str, before_hanging_up: Callable[[], None] = lambda: None
) -> None:
    host, port = stack.proxy.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        before_hanging_up()


def waiting_requests(stack: Stack) -> float:
    metrics = httpx.get(f"{stack.proxy.admin_url}/metrics", timeout=2).text
    return parse_metric(metrics, "ringleader_http_cache_waiting_requests")


def test_a_client_that_goes_away_cancels_the_origin_fetch(raw_stack: Stack, name: str) -> None:
    raw_stack.origin.configure(
        name, headers=[["cache-control", "max-age=60"]], size=30, chunked=True, pause=PAUSE
    )
    read_first_chunk_and_hang_up(raw_stack, f"/{name}")
    # The origin would finish after 3 pauses; it sees its client (the proxy) go first.
    wait_until(lambda: raw_stack.origin.count(name, "aborted") == 1, 2.5 * PAUSE, "the abort")
    assert raw_stack.client.get(f"/{name}").headers["x-cache"] == "MISS"


def test_a_fetch_others_wait_on_outlives_its_client(raw_stack: Stack, name: str) -> None:
    # The whole body takes 3 pauses, within the follower's 2 s --lease-wait.
    raw_stack.origin.configure(
        name, headers=[["cache-control", "max-age=60"]], size=30, chunked=True, pause=PAUSE / 2
    )
    results: list[tuple[int, bytes, str]] = []

    def follower() -> None:
        response = httpx.get(f"{raw_stack.proxy.url}/{name}", timeout=10)
        results.append((response.status_code, response.content, response.headers["x-cache"]))

    def until_followed() -> None:
        waiting = threading.Thread(target=follower)
        waiting.start()
        wait_until(lambda: waiting_requests(raw_stack) == 1, 5, "the follower to wait")
        threads.append(waiting)

    threads: list[threading.Thread] = []
    read_first_chunk_and_hang_up(raw_stack, f"/{name}", until_followed)
    (waiting,) = threads
    waiting.join()
    assert results == [(200, b"x" * 30, "HIT")]
    assert raw_stack.origin.count(name) == 1
    assert raw_stack.origin.count(name, "aborted") == 0


def test_hit_for_pass_sends_requests_straight_to_the_origin(raw_stack: Stack, name: str) -> None:
    """After one uncacheable answer, concurrent requests neither wait on each other nor
    on a lease: three that each take PAUSE at the origin finish in about PAUSE."""
    raw_stack.origin.configure(name, headers=[["cache-control", "private"]], delay=PAUSE)
    assert raw_stack.client.get(f"/{name}").headers["x-cache"] == "MISS"
    results: list[str] = []

    def fetch() -> None:
        results.append(httpx.get(f"{raw_stack.proxy.url}/{name}", timeout=10).headers["x-cache"])

    started = time.monotonic()
    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == ["PASS"] * 3
    assert elapsed < 1.9 * PAUSE, f"three concurrent passes took {elapsed:.2f}s"
    assert raw_stack.origin.count(name) == 4
