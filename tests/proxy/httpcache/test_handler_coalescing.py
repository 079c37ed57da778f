"""Requirement 6: coalescing in a worker, and fleet-wide through backend leases."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.proxy.httpcache.conftest import Stack
from tests.support.servers import Proxy


async def burst(urls: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=15) as client:
        return list(await asyncio.gather(*(client.get(url) for url in urls)))


def test_concurrent_misses_in_a_worker_make_one_origin_request(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[["cache-control", "max-age=60"]], delay=0.4,
                           counter_body=True)  # fmt: skip
    responses = asyncio.run(burst([f"{stack.proxy.url}/{name}"] * 20))
    assert {(r.status_code, r.text) for r in responses} == {(200, f"body of {name} #1")}
    assert Counter(r.headers["x-cache"] for r in responses) == {"MISS": 1, "HIT": 19}
    assert stack.origin.count(name) == 1


def test_concurrent_revalidations_make_one_origin_request(stack: Stack, name: str) -> None:
    stack.origin.configure(name, headers=[["cache-control", "max-age=0"]], etag='"v"')
    stack.client.get(f"/{name}")
    stack.origin.configure(name, headers=[["cache-control", "max-age=0"]], etag='"v"', delay=0.4)
    responses = asyncio.run(burst([f"{stack.proxy.url}/{name}"] * 10))
    assert {r.status_code for r in responses} == {200}
    assert stack.origin.count(name) == 2


def test_fleet_burst_makes_about_one_origin_request(stack: Stack, name: str) -> None:
    """Three proxies (one with two workers) share the backends; a burst of misses for one
    key spread over them reaches the origin once: the lease holder fetches, the rest
    wait for its entry."""
    fleet: list[Proxy] = [
        stack.proxy,
        stack.group.proxy(stack.backends, "--origin", stack.origin.url, "--workers", "2"),
        stack.group.proxy(stack.backends, "--origin", stack.origin.url),
    ]
    stack.origin.configure(name, headers=[["cache-control", "max-age=60"]], delay=0.5,
                           counter_body=True)  # fmt: skip
    urls = [f"{fleet[i % 3].url}/{name}" for i in range(30)]
    responses = asyncio.run(burst(urls))
    assert {(r.status_code, r.text) for r in responses} == {(200, f"body of {name} #1")}
    assert stack.origin.count(name) == 1


def test_waiters_give_up_after_a_bounded_wait(stack: Stack, name: str) -> None:
    """A leader slower than --lease-wait: followers fetch themselves, and all succeed."""
    impatient = stack.group.proxy(
        stack.backends, "--origin", stack.origin.url, "--lease-wait", "0.2"
    )
    stack.origin.configure(name, headers=[["cache-control", "max-age=60"]], delay=1.0)
    responses = asyncio.run(burst([f"{impatient.url}/{name}"] * 4))
    assert {r.status_code for r in responses} == {200}
    assert stack.origin.count(name) == 4
