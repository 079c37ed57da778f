"""ControlClient against an in-process control plane (httpx.MockTransport): which node it
asks, when it moves on, and what it raises."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from ringleader.control_client import ControlClient, ControlError, Reply, node_for

A, B, C = "http://a:7000", "http://b:7000", "http://c:7000"

Answer = Callable[[httpx.Request], httpx.Response]


class Plane:
    """Nodes by base URL; a node without an answer refuses connections."""

    def __init__(self, **answers: Answer) -> None:
        self.answers = {f"http://{host}:7000": answer for host, answer in answers.items()}
        self.asked: list[str] = []
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        self.asked.append(base)
        self.requests.append(request)
        answer = self.answers.get(base)
        if answer is None:
            raise httpx.ConnectError("connection refused", request=request)
        return answer(request)

    def client(
        self, urls: list[str], token: str | None = None, deadline: float = 10.0,
        spread_by: str | None = None,
    ) -> ControlClient:  # fmt: skip
        transport = httpx.MockTransport(self.handle)
        return ControlClient(
            urls, token, deadline=deadline, transport=transport, spread_by=spread_by
        )


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True, "path": request.url.path})


def no_leader(_: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": "no_leader", "message": "no leader is known"})


def get(client: ControlClient, path: str = "/v1/status") -> Reply:
    async def scenario() -> Reply:
        async with client:
            return await client.request("GET", path)

    return asyncio.run(scenario())


def test_a_refused_connection_moves_on_to_the_next_node() -> None:
    plane = Plane(b=ok)
    reply = get(plane.client([A, B]))
    assert (reply.status, reply.url, reply.body["path"]) == (200, B, "/v1/status")
    assert plane.asked == [A, B]


def test_a_node_without_a_leader_moves_on_to_the_next_node() -> None:
    plane = Plane(a=no_leader, b=ok)
    assert get(plane.client([A, B])).url == B
    assert plane.asked == [A, B]


def test_the_node_that_answered_is_asked_first_next_time() -> None:
    plane = Plane(c=ok)

    async def scenario() -> list[str]:
        async with plane.client([A, B, C]) as client:
            await client.request("GET", "/one")
            await client.request("GET", "/two")
        return plane.asked

    assert asyncio.run(scenario()) == [A, B, C, C]


def test_it_gives_up_at_the_deadline_naming_every_node() -> None:
    plane = Plane(a=no_leader)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ControlError) as caught:
            async with plane.client([A, B], deadline=0.3) as client:
                await client.request("GET", "/v1/status")
        message = str(caught.value)
        assert message.startswith("control plane unavailable: ")
        assert f"{A}: 503 no leader is known" in message
        assert f"{B}: ConnectError connection refused" in message
        return loop.time() - started

    elapsed = asyncio.run(scenario())
    assert 0.3 <= elapsed < 2.0
    assert len(plane.asked) > 2  # it went round the nodes more than once


def test_a_zero_deadline_means_exactly_one_attempt() -> None:
    plane = Plane(b=ok)
    with pytest.raises(ControlError, match="control plane unavailable"):
        get(plane.client([A, B], deadline=0.0))
    assert plane.asked == [A]


def test_giving_up_says_whether_the_last_node_answered() -> None:
    """A 503 (alive, no leader) against silence: the ring watch retries sooner after one."""
    with pytest.raises(ControlError) as answered:
        get(Plane(a=no_leader).client([A, B], deadline=0.0))
    assert answered.value.status == 503
    with pytest.raises(ControlError) as silent:
        get(Plane(b=no_leader).client([A, B], deadline=0.0))
    assert silent.value.status is None


def test_a_refusal_is_not_retried_and_carries_status_code_and_message() -> None:
    def unknown_pool(_: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "unknown_pool", "message": "no pool 'x'"})

    plane = Plane(a=unknown_pool, b=ok)
    with pytest.raises(ControlError) as caught:
        get(plane.client([A, B]), "/v1/pools/x/ring")
    assert str(caught.value) == f"404 from {A}: no pool 'x'"
    assert (caught.value.status, caught.value.code) == (404, "unknown_pool")
    assert plane.asked == [A]


def test_a_body_that_is_not_json_is_kept_as_text() -> None:
    plane = Plane(a=lambda _: httpx.Response(200, text="plain"))
    assert get(plane.client([A])).body == "plain"


@pytest.mark.parametrize(("token", "expected"), [("s3cret", "Bearer s3cret"), (None, None)])
def test_the_token_goes_in_the_authorization_header(
    token: str | None, expected: str | None
) -> None:
    plane = Plane(b=ok)
    get(plane.client([A, B], token=token))
    # Every attempt carries it, the failed one too.
    assert [r.headers.get("authorization") for r in plane.requests] == [expected, expected]


def proxy_keys(count: int) -> list[str]:
    """Proxy identities as proxy/reporter.py makes them: hostname/listen address."""
    return [f"cache-{i // 8}/10.0.{i // 250}.{i % 250}:8080" for i in range(count)]


def test_spread_by_starts_at_the_node_its_key_hashes_to_and_moves_on_from_there() -> None:
    key = next(k for k in proxy_keys(100) if node_for(k, 3) == 1)
    plane = Plane(c=ok)
    assert get(plane.client([A, B, C], spread_by=key)).url == C
    assert plane.asked == [B, C]


def test_without_spread_by_every_client_starts_at_the_first_node() -> None:
    plane = Plane(a=ok, b=ok, c=ok)
    for _ in range(5):
        get(plane.client([A, B, C]))
    assert plane.asked == [A] * 5


def test_a_fleet_spread_by_identity_lands_evenly_on_every_node() -> None:
    counts = [0, 0, 0]
    for key in proxy_keys(3000):
        counts[node_for(key, 3)] += 1
    # Binomial(3000, 1/3): mean 1000, standard deviation 26; 900 is almost 4 of them.
    assert all(900 <= c <= 1100 for c in counts), counts


def test_the_node_a_key_picks_is_fixed_across_processes_and_releases() -> None:
    # A proxy keeps its node across restarts: the hash is not Python's salted hash().
    assert [node_for(k, 3) for k in proxy_keys(8)] == [2, 0, 1, 0, 1, 1, 0, 0]
