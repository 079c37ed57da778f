"""HealthProber against fake backend clients whose probes the test answers one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import pytest

from proxy import health
from proxy.health import DOWN_AFTER, HealthProber
from proxy.metrics import ProxyMetrics
from ringleader.backend_url import BackendSpec, parse_backend_url
from ringleader.backends import BackendUnavailable, CacheClient, ClientSettings

A = parse_backend_url("memcached://10.0.0.1:11211?name=a")
B = parse_backend_url("memcached://10.0.0.2:11211?name=b")


class FakeBackend:
    """A client whose every ping waits for the test's answer: None (pong) or an error."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.answers: asyncio.Queue[str | None] = asyncio.Queue()
        self.pinged = asyncio.Event()
        self.closed = False

    async def ping(self) -> None:
        self.pinged.set()
        error = await self.answers.get()
        if error is not None:
            raise BackendUnavailable(self.spec.name, error)

    async def close(self) -> None:
        self.closed = True


async def pinged(backend: FakeBackend) -> None:
    async with asyncio.timeout(5):
        await backend.pinged.wait()


async def answer(backend: FakeBackend, error: str | None) -> None:
    """Answers the pending ping and waits until the prober has acted on it, which it has
    when it sends the next ping."""
    backend.pinged.clear()
    backend.answers.put_nowait(error)
    await pinged(backend)


Scenario = Callable[[HealthProber, dict[str, FakeBackend], list[None]], Awaitable[None]]


def probing(monkeypatch: pytest.MonkeyPatch, scenario: Scenario) -> None:
    backends: dict[str, FakeBackend] = {}

    def make_client(spec: BackendSpec, _: ClientSettings) -> CacheClient:
        backends[spec.name] = FakeBackend(spec)
        return cast(CacheClient, backends[spec.name])

    monkeypatch.setattr(health, "make_client", make_client)

    async def main() -> None:
        changes: list[None] = []
        prober = HealthProber(
            ProxyMetrics(), interval=0.01, timeout=1.0, on_change=lambda: changes.append(None)
        )
        try:
            await scenario(prober, backends, changes)
        finally:
            await prober.close()

    asyncio.run(main())


def test_a_backend_is_up_once_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(
        prober: HealthProber, backends: dict[str, FakeBackend], changes: list[None]
    ) -> None:
        await prober.watch((A,))
        assert prober.view["a"].state == "unknown"
        await pinged(backends["a"])
        await answer(backends["a"], None)
        seen = prober.view["a"]
        assert (seen.state, seen.consecutive_failures, seen.last_error) == ("up", 0, None)
        assert seen.since > 0
        assert seen.rtt_seconds is not None
        assert len(changes) == 1
        await answer(backends["a"], None)
        assert len(changes) == 1  # no change, no news

    probing(monkeypatch, scenario)


def test_a_backend_is_down_only_after_consecutive_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(
        prober: HealthProber, backends: dict[str, FakeBackend], changes: list[None]
    ) -> None:
        await prober.watch((A,))
        await pinged(backends["a"])
        await answer(backends["a"], None)
        for _failure in range(DOWN_AFTER - 1):
            await answer(backends["a"], "refused")
            assert prober.view["a"].state == "up"
        await answer(backends["a"], "refused")
        seen = prober.view["a"]
        assert (seen.state, seen.consecutive_failures) == ("down", DOWN_AFTER)
        assert seen.last_error == "refused"
        assert seen.observation().to_json()["state"] == "down"
        assert len(changes) == 2
        await answer(backends["a"], None)
        assert (prober.view["a"].state, len(changes)) == ("up", 3)

    probing(monkeypatch, scenario)


def test_a_backend_left_out_is_no_longer_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(
        prober: HealthProber, backends: dict[str, FakeBackend], _: list[None]
    ) -> None:
        await prober.watch((A, B))
        await prober.watch((B,))
        assert set(prober.view) == {"b"}
        assert backends["a"].closed
        assert not backends["b"].closed

    probing(monkeypatch, scenario)
