"""The fleet page's server side (control/ui.py).

The arcs are checked against the real `KetamaRing`: every 32-bit hash belongs to exactly
one arc, each backend's arcs hold exactly its ketama points, and a key falls in the arcs
of the backend `lookup` routes it to. The routes are checked against a real 3-node
cluster: the page and its assets need no token, and `/ui/api/nodes` tells a node that
does not answer from one that does.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import httpx
import pytest

from control.registry import AdminState, Backend, Health, Pool
from control.ui import ASSETS, CIRCLE, NODES_CACHE_SECONDS, BackendArcs, pool_arcs, ring_arcs
from ringleader.backend_url import parse_backend_url
from ringleader.ring.hashes import KEY_HASHES
from ringleader.ring.ketama import KetamaRing, points_per_server
from tests.support.control_cluster import ControlCluster, backend_url, module_cluster
from tests.support.servers import wait_until


def members(weights: list[int]) -> tuple[tuple[str, str, int], ...]:
    return tuple(
        (f"cache-{i}", backend_url(f"cache-{i}", 11211 + i, w), w) for i, w in enumerate(weights)
    )


def owners(arcs: tuple[BackendArcs, ...]) -> Callable[[int], str]:
    """Which backend's arcs hold a hash (the arcs, once checked to tile the circle)."""
    spans = sorted((lo, hi, a.name) for a in arcs for lo, hi in a.arcs)
    starts = [lo for lo, _, _ in spans]

    def owner(key_hash: int) -> str:
        lo, hi, name = spans[bisect_right(starts, key_hash) - 1]
        assert lo <= key_hash < hi
        return name

    return owner


@pytest.mark.parametrize("hash_name", sorted(KEY_HASHES))
@pytest.mark.parametrize("case", range(6))
def test_arcs_partition_the_circle_and_match_the_ketama_ring(hash_name: str, case: int) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    size = [1, 2, 3, 7, 25, 50][case]  # 25 and 50: the float32 pools with 156 points each
    weights = [1] * size if case % 2 else [rng.randint(1, 5) for _ in range(size)]
    ring_members = members(weights)
    arcs = ring_arcs(ring_members, hash_name)
    ring = KetamaRing([parse_backend_url(url) for _, url, _ in ring_members], hash_name)

    assert [a.name for a in arcs] == [name for name, _, _ in ring_members]
    total = sum(weights)
    for a, weight in zip(arcs, weights, strict=True):
        assert a.points == points_per_server(weight, total, size)
        assert a.hashes == sum(hi - lo for lo, hi in a.arcs)
    assert sum(a.points for a in arcs) == ring.point_count
    assert sum(a.hashes for a in arcs) == CIRCLE
    assert sum(a.to_json(0.0)["share"] for a in arcs) == pytest.approx(1.0, abs=1e-12)

    spans = sorted(span for a in arcs for span in a.arcs)
    assert spans[0][0] == 0
    assert spans[-1][1] == CIRCLE
    for (_, hi), (lo, _) in pairwise(spans):
        assert hi == lo, "arcs must neither overlap nor leave a gap"
    for a in arcs:  # each backend's runs are maximal: adjacent runs of one owner are merged
        assert all(prev[1] < nxt[0] for prev, nxt in pairwise(a.arcs))

    key_hash, owner = KEY_HASHES[hash_name], owners(arcs)
    for i in range(2000):
        key = f"key-{rng.randrange(1 << 40)}-{i}".encode()
        assert owner(key_hash(key)) == ring.lookup(key).name, key


def test_a_single_backend_owns_the_whole_circle() -> None:
    (only,) = ring_arcs(members([3]), "fnv1a_64")
    assert only.arcs == ((0, CIRCLE),)
    assert only.points == 160


def test_pool_arcs_draw_every_registered_backend_and_share_keys_among_ring_members() -> None:
    pool = Pool("p", epoch=9)
    for name, url, weight in members([1, 1, 2, 1, 1]):
        pool.backends[name] = Backend(name, url, weight)
    pool.backends["cache-1"].health = Health.DOWN
    pool.backends["cache-2"].admin = AdminState.DRAINING
    pool.backends["cache-4"].admin = AdminState.REMOVED
    doc: dict[str, Any] = pool_arcs(pool)

    drawn = {b["name"]: b for b in doc["backends"]}
    assert list(drawn) == ["cache-0", "cache-1", "cache-2", "cache-3"]
    assert doc["epoch"] == 9
    assert doc["circle"] == CIRCLE
    assert sum(b["share"] for b in drawn.values()) == pytest.approx(1.0)
    assert drawn["cache-1"]["serving_share"] == drawn["cache-2"]["serving_share"] == 0.0
    serving = {n: b["serving_share"] for n, b in drawn.items() if b["serving_share"]}
    assert set(serving) == {"cache-0", "cache-3"}
    assert sum(serving.values()) == pytest.approx(1.0)
    assert doc["points"] == sum(b["points"] for b in drawn.values())


def test_an_empty_pool_has_no_arcs() -> None:
    doc = pool_arcs(Pool("empty"))
    assert doc["backends"] == []
    assert doc["points"] == 0


# -- the routes, on a real cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    yield from module_cluster(tmp_path_factory, "ui")


def test_the_page_and_its_assets_need_no_token(cluster: ControlCluster) -> None:
    base = cluster.url(1)
    page = httpx.get(base + "/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="fleet.js"' in page.text
    assert 'href="fleet.css"' in page.text
    for name in ASSETS:
        asset = httpx.get(f"{base}/ui/{'' if name == 'index.html' else name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"] == ASSETS[name]
    moved = httpx.get(base + "/ui")
    assert moved.status_code == 308
    assert moved.headers["location"] == "/ui/"
    assert httpx.get(base + "/ui/nothing.js").status_code == 404


def test_arcs_route_serves_the_pool_and_refuses_an_unknown_one(cluster: ControlCluster) -> None:
    cluster.write_acked("POST", "/v1/pools/default/backends", {"url": backend_url("ui-a", 11300)})
    cluster.write_acked("POST", "/v1/pools/default/backends", {"url": backend_url("ui-b", 11301)})
    leader = cluster.wait_leader()
    doc = httpx.get(cluster.url(leader) + "/ui/api/pools/default/arcs").json()
    assert {"ui-a", "ui-b"} <= {b["name"] for b in doc["backends"]}
    assert sum(b["share"] for b in doc["backends"]) == pytest.approx(1.0)
    missing = httpx.get(cluster.url(leader) + "/ui/api/pools/nope/arcs")
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_pool"


def test_nodes_route_tells_a_silent_node_from_the_others(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.followers(leader)[0]
    asked = cluster.url(leader) + "/ui/api/nodes"

    def reachable() -> dict[int, bool]:
        return {n["id"]: n["reachable"] for n in httpx.get(asked).json()["nodes"]}

    wait_until(lambda: reachable() == {1: True, 2: True, 3: True}, 10, "every node reachable")
    nodes = {n["id"]: n for n in httpx.get(asked).json()["nodes"]}
    assert nodes[leader]["self"]
    assert nodes[leader]["status"]["role"] == "leader"
    assert nodes[follower]["status"]["id"] == follower
    cluster.stop(follower)  # SIGSTOP: it holds the connection and never answers
    try:
        wait_until(lambda: not reachable()[follower], 5 + NODES_CACHE_SECONDS, "silent node")
        silent = next(n for n in httpx.get(asked).json()["nodes"] if n["id"] == follower)
        assert silent["status"] is None
        assert silent["error"]
    finally:
        cluster.cont(follower)
    wait_until(lambda: reachable()[follower], 10, "node reachable again")
