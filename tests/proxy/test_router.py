"""The router: an immutable routing table per ring, swapped atomically, epochs only up."""

from __future__ import annotations

import asyncio

import pytest

from proxy.metrics import ProxyMetrics
from proxy.router import RingState, Router
from ringleader.backend_url import parse_backend_url
from ringleader.backends import ClientSettings
from ringleader.backends.memcached import MemcachedClient
from ringleader.backends.redis import RedisClient
from ringleader.ring import KetamaRing

A = parse_backend_url("memcached://10.0.0.1:11211")
B = parse_backend_url("memcached://10.0.0.2:11211?name=b&weight=2")
C = parse_backend_url("redis://10.0.0.3:6379/2?name=c")

FAILOVER_TTL = 30
SETTINGS = ClientSettings(connect_timeout=0.5, request_timeout=0.5)


def router_for(state: RingState) -> Router:
    return Router(SETTINGS, state, FAILOVER_TTL, ProxyMetrics().failover_writes)


def state(epoch: int, *backends: object, hash_name: str = "fnv1a_64") -> RingState:
    return RingState(epoch, hash_name, tuple(backends))  # type: ignore[arg-type]


def test_route_follows_the_ring_and_carries_backend_and_epoch_headers() -> None:
    router = router_for(state(7, A, B, C))
    ring = KetamaRing([A, B, C])
    for i in range(300):
        key = f"k{i}".encode()
        route = router.table.route(key)
        assert route is not None
        assert route.spec == ring.lookup(key)
        assert route.client.name == route.spec.name
        assert dict(route.headers) == {
            b"x-ringleader-backend": route.spec.name.encode(),
            b"x-ringleader-epoch": b"7",
        }


def test_clients_match_the_backend_protocol() -> None:
    router = router_for(state(1, A, C))
    clients = {r.spec.name: r.client for r in router.table.routes.values()}
    assert isinstance(clients["10.0.0.1"], MemcachedClient)
    assert isinstance(clients["c"], RedisClient)


def test_the_table_uses_the_ring_hash() -> None:
    router = router_for(state(1, A, B, C, hash_name="md5"))
    ring = KetamaRing([A, B, C], "md5")
    for i in range(300):
        route = router.table.route(b"%d" % i)
        assert route is not None
        assert route.spec == ring.lookup(b"%d" % i)


def test_install_swaps_the_table_and_keeps_clients_of_backends_that_stay() -> None:
    async def scenario() -> None:
        router = router_for(state(1, A, B))
        old_table = router.table
        kept = old_table.routes["b"].client
        assert router.install(state(2, B, C)) is True
        assert router.table is not old_table
        assert router.table.state.epoch == 2
        assert router.table.routes["b"].client is kept
        # The old table is untouched: a request that started on it finishes on it.
        assert set(old_table.routes) == {"10.0.0.1", "b"}
        assert old_table.state.epoch == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("epoch", [4, 5])
def test_install_ignores_an_older_or_equal_epoch(epoch: int) -> None:
    router = router_for(state(5, A))
    table = router.table
    assert router.install(state(epoch, A, B)) is False
    assert router.table is table


def test_a_changed_spec_under_the_same_name_gets_a_new_client() -> None:
    async def scenario() -> None:
        router = router_for(state(1, B))
        moved = parse_backend_url("memcached://10.9.9.9:11211?name=b&weight=2")
        old = router.table.routes["b"].client
        router.install(state(2, moved))
        assert router.table.routes["b"].client is not old

    asyncio.run(scenario())


def test_an_empty_ring_routes_nowhere() -> None:
    router = router_for(state(3))
    assert router.table.route(b"anything") is None


def test_writes_are_failover_only_for_keys_whose_owner_is_down() -> None:
    owners = (A, B, C)
    router = router_for(RingState(9, "fnv1a_64", (A, C), owners))
    full = KetamaRing(owners)
    moved = 0
    for i in range(500):
        key = b"k%d" % i
        route = router.table.route(key)
        assert route is not None
        failover = router.table.is_failover(key, route)
        assert failover == (full.lookup(key).name == "b")
        moved += failover
    assert moved > 0
    healthy = router_for(state(9, A, C))
    route = healthy.table.route(b"k1")
    assert route is not None
    assert not healthy.table.is_failover(b"k1", route)


def test_write_ttl_caps_only_failover_writes_and_counts_them() -> None:
    metrics = ProxyMetrics()
    router = Router(
        SETTINGS, RingState(9, "fnv1a_64", (A, C), (A, B, C)), 30, metrics.failover_writes
    )
    full = KetamaRing((A, B, C))
    owned = next(b"k%d" % i for i in range(100) if full.lookup(b"k%d" % i).name != "b")
    moved = next(b"k%d" % i for i in range(100) if full.lookup(b"k%d" % i).name == "b")
    owned_route, moved_route = router.table.route(owned), router.table.route(moved)
    assert owned_route is not None
    assert moved_route is not None
    assert router.table.write_ttl(owned, owned_route, 0) == 0
    assert router.table.write_ttl(owned, owned_route, 3600) == 3600
    assert router.table.write_ttl(moved, moved_route, 0) == 30
    assert router.table.write_ttl(moved, moved_route, 3600) == 30
    assert router.table.write_ttl(moved, moved_route, 5) == 5
    counted = metrics.failover_writes.labels(moved_route.spec.name).value
    assert counted == 3


def test_the_table_uses_the_proxy_hash_tag_for_every_ring() -> None:
    metrics = ProxyMetrics()
    router = Router(
        SETTINGS, RingState(3, "md5", (A, C), (A, B, C)), 30,
        metrics.failover_writes, b"{}",
    )  # fmt: skip
    ring, owners = KetamaRing([A, C], "md5"), KetamaRing([A, B, C], "md5")
    for i in range(300):
        key = b"{%d}:suffix:%d" % (i % 7, i)
        route = router.table.route(key)
        assert route is not None
        assert route.spec == ring.lookup(b"%d" % (i % 7))
        # The owner ring, which tells failover writes, hashes the same tagged part.
        failover = owners.lookup(b"%d" % (i % 7)) != route.spec
        assert router.table.is_failover(key, route) == failover
    # A ring installed later (from the control plane) keeps the tag.
    assert router.install(RingState(4, "md5", (A, B, C)))
    assert router.table.ring is not None
    assert router.table.ring.hash_tag == b"{}"
