"""The router: an immutable routing table per ring, swapped atomically, epochs only up."""

from __future__ import annotations

import pytest

from proxy.backend_url import parse_backend_url
from proxy.backends import ClientSettings
from proxy.backends.memcached import MemcachedClient
from proxy.backends.redis import RedisClient
from proxy.ring import KetamaRing
from proxy.router import RingState, Router

A = parse_backend_url("memcached://10.0.0.1:11211")
B = parse_backend_url("memcached://10.0.0.2:11211?name=b&weight=2")
C = parse_backend_url("redis://10.0.0.3:6379/2?name=c")


def state(epoch: int, *backends: object, hash_name: str = "fnv1a_64") -> RingState:
    return RingState(epoch, hash_name, tuple(backends))  # type: ignore[arg-type]


def test_route_follows_the_ring_and_carries_backend_and_epoch_headers() -> None:
    router = Router(ClientSettings(), state(7, A, B, C))
    ring = KetamaRing([A, B, C])
    for i in range(300):
        key = f"k{i}".encode()
        route = router.table.route(key)
        assert route.spec == ring.lookup(key)
        assert route.client.name == route.spec.name
        assert dict(route.headers) == {
            b"x-ringleader-backend": route.spec.name.encode(),
            b"x-ringleader-epoch": b"7",
        }


def test_clients_match_the_backend_protocol() -> None:
    router = Router(ClientSettings(), state(1, A, C))
    clients = {r.spec.name: r.client for r in router.table.routes.values()}
    assert isinstance(clients["10.0.0.1"], MemcachedClient)
    assert isinstance(clients["c"], RedisClient)


def test_the_table_uses_the_ring_hash() -> None:
    router = Router(ClientSettings(), state(1, A, B, C, hash_name="md5"))
    ring = KetamaRing([A, B, C], "md5")
    assert all(router.table.route(b"%d" % i).spec == ring.lookup(b"%d" % i) for i in range(300))


def test_install_swaps_the_table_and_keeps_clients_of_backends_that_stay() -> None:
    router = Router(ClientSettings(), state(1, A, B))
    old_table = router.table
    kept = old_table.routes["b"].client
    retired = router.install(state(2, B, C))
    assert router.table is not old_table
    assert router.table.state.epoch == 2
    assert router.table.routes["b"].client is kept
    assert [c.name for c in retired] == ["10.0.0.1"]
    # The old table is untouched: a request that started on it finishes on it.
    assert set(old_table.routes) == {"10.0.0.1", "b"}
    assert old_table.state.epoch == 1


def test_install_refuses_an_older_epoch_and_keeps_the_current_table() -> None:
    router = Router(ClientSettings(), state(5, A))
    table = router.table
    with pytest.raises(ValueError, match="refusing ring epoch 4: already at 5"):
        router.install(state(4, A, B))
    assert router.table is table


def test_install_of_the_same_epoch_is_allowed() -> None:
    router = Router(ClientSettings(), state(5, A))
    assert router.install(state(5, A)) == []
    assert router.table.state.epoch == 5


def test_a_changed_spec_under_the_same_name_gets_a_new_client() -> None:
    router = Router(ClientSettings(), state(1, B))
    moved = parse_backend_url("memcached://10.9.9.9:11211?name=b&weight=2")
    old = router.table.routes["b"].client
    retired = router.install(state(2, moved))
    assert retired == [old]
    assert router.table.routes["b"].client is not old
