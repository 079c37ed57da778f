"""The fleet page: `GET /ui/` on every control node, read-only, with no token.

The page (control/ui_assets/) is static and polls the JSON API for what it shows. Two
read-only endpoints give it what the API does not:

- `GET /ui/api/pools/{pool}/arcs`: the ring drawn as arcs of the hash circle, computed
  with the real `KetamaRing`, so the browser never reimplements ketama;
- `GET /ui/api/nodes`: every control node's `/v1/status`, asked by this node, since a
  browser cannot reach the peers' addresses (cluster-internal, and another origin).

Both are served from this node's applied state, like the page's `?stale=1` reads: an
incident page has to keep working when the cluster has lost its quorum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from control.raft.types import NodeId
from control.registry import AdminState, FailureCode, Pool, Registry
from ringleader.backend_url import parse_backend_url
from ringleader.ring.ketama import KetamaRing

# The hash circle: ketama points and key hashes are 32-bit.
CIRCLE = 1 << 32
# How long one round of peer status calls serves every viewer of the page.
NODES_CACHE_SECONDS = 0.5
PEER_STATUS_TIMEOUT = 0.5
ARC_CACHE_SIZE = 64

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "fleet.js": "text/javascript; charset=utf-8",
    "fleet.css": "text/css; charset=utf-8",
}
# The page loads nothing from anywhere else and runs no inline script; what it shows
# (names, reasons, evidence) is written as text, never as markup.
ASSET_HEADERS = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

Handler = Callable[[Request], Awaitable[Response]]
# (name, url, weight) of each backend, in ring order: all that ketama placement depends on.
Members = tuple[tuple[str, str, int], ...]


@dataclass(frozen=True, slots=True)
class BackendArcs:
    """One backend's part of the circle.

    `arcs` are half-open ranges [lo, hi) of 32-bit key hashes, in circle order, each a run
    of consecutive points this backend owns: a key whose hash falls in one is routed here.
    `points` counts the backend's ketama points (some may own no hashes, when another
    backend's point has the same value and sorts first).
    """

    name: str
    weight: int
    points: int
    hashes: int  # how many of the 2**32 key hashes it owns
    arcs: tuple[tuple[int, int], ...]

    def to_json(self, serving_share: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "points": self.points,
            "share": self.hashes / CIRCLE,
            "serving_share": serving_share,
            "arcs": [list(arc) for arc in self.arcs],
        }


def ring_arcs(members: Members, hash_name: str) -> tuple[BackendArcs, ...]:
    """The arcs of the ketama ring over `members`, one entry per member in ring order."""
    if not members:
        return ()
    ring = KetamaRing([parse_backend_url(url) for _, url, _ in members], hash_name)
    points = [(point, owner.name) for point, owner in ring.continuum()]
    runs: dict[str, list[tuple[int, int]]] = {name: [] for name, _, _ in members}
    counts = dict.fromkeys(runs, 0)

    def own(owner: str, lo: int, hi: int) -> None:
        owned = runs[owner]
        if owned and owned[-1][1] == lo:
            owned[-1] = (owned[-1][0], hi)
        else:
            owned.append((lo, hi))

    # Point i takes the hashes after point i-1 up to itself: [previous + 1, point + 1). The
    # first point also takes those after the last point, past the wrap: [last + 1, 2**32).
    previous_end = 0
    for point, owner in points:
        counts[owner] += 1
        if point + 1 > previous_end:  # else a duplicate value: the first owner in order has it
            own(owner, previous_end, point + 1)
            previous_end = point + 1
    if previous_end < CIRCLE:
        own(points[0][1], previous_end, CIRCLE)
    return tuple(
        BackendArcs(name, weight, counts[name], _arc_total(runs[name]), tuple(runs[name]))
        for name, _, weight in members
    )


def _arc_total(arcs: list[tuple[int, int]]) -> int:
    return sum(hi - lo for lo, hi in arcs)


@lru_cache(maxsize=ARC_CACHE_SIZE)
def _cached_arcs(members: Members, hash_name: str) -> tuple[BackendArcs, ...]:
    return ring_arcs(members, hash_name)


def pool_arcs(pool: Pool) -> dict[str, Any]:
    """The arcs of `pool`'s backends that are not removed (active, draining or down), and
    each one's share of the keys the ring it serves with gives it now.

    The circle is drawn over every registered backend, not only the ring's members, so a
    draining or down backend keeps the arcs whose keys have moved away while it is out.
    """
    registered = tuple(
        (b.name, b.url, b.weight)
        for b in pool.backends.values()
        if b.admin is not AdminState.REMOVED
    )
    members = tuple((b.name, b.url, b.weight) for b in pool.members())
    serving = {arcs.name: arcs.hashes / CIRCLE for arcs in _cached_arcs(members, pool.hash)}
    drawn = _cached_arcs(registered, pool.hash)
    return {
        "pool": pool.name,
        "epoch": pool.epoch,
        "hash": pool.hash,
        "distribution": pool.distribution,
        "circle": CIRCLE,
        "points": sum(arcs.points for arcs in drawn),
        "backends": [arcs.to_json(serving.get(arcs.name, 0.0)) for arcs in drawn],
    }


@cache
def _asset(name: str) -> bytes:
    """Read on first use: a package installed without its page data loses the page, not
    the node."""
    return files("control").joinpath("ui_assets", name).read_bytes()


class FleetPage:
    """The page's routes, as (path, handler, method) for `ControlAPI` to serve."""

    def __init__(
        self,
        registry: Registry,
        peers: Mapping[NodeId, str],
        local_status: Callable[[], dict[str, Any]],
        client: httpx.AsyncClient,
    ) -> None:
        self._registry = registry
        self._peers = peers
        self._local_status = local_status
        self._client = client
        self._nodes: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None

    def routes(self) -> list[tuple[str, Handler, str]]:
        return [
            ("/ui", self.redirect, "GET"),
            ("/ui/", self.index, "GET"),
            ("/ui/fleet.js", self.asset, "GET"),
            ("/ui/fleet.css", self.asset, "GET"),
            ("/ui/api/pools/{pool}/arcs", self.arcs, "GET"),
            ("/ui/api/nodes", self.nodes, "GET"),
        ]

    async def redirect(self, _: Request) -> Response:
        return RedirectResponse("/ui/", status_code=308)

    async def index(self, _: Request) -> Response:
        return self._asset_response("index.html")

    async def asset(self, request: Request) -> Response:
        return self._asset_response(request.url.path.rsplit("/", 1)[-1])

    def _asset_response(self, name: str) -> Response:
        try:
            body = _asset(name)
        except FileNotFoundError:
            message = f"control/ui_assets/{name} is missing: the package was installed without it"
            return JSONResponse({"error": "missing_asset", "message": message}, 500)
        return Response(body, media_type=ASSETS[name], headers=ASSET_HEADERS)

    async def arcs(self, request: Request) -> Response:
        name = request.path_params["pool"]
        pool = self._registry.pools.get(name)
        if pool is None:
            message = f"no pool named {name!r}"
            return JSONResponse({"error": FailureCode.UNKNOWN_POOL.value, "message": message}, 404)
        return JSONResponse(pool_arcs(pool))

    async def nodes(self, _: Request) -> Response:
        """Each node's status as this node sees it, with whether it answered and how fast.
        One round of calls serves every request within NODES_CACHE_SECONDS of its start."""
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > NODES_CACHE_SECONDS:
            self._nodes = (now, asyncio.ensure_future(self._ask_nodes()))
        return JSONResponse({"nodes": await asyncio.shield(self._nodes[1])})

    async def _ask_nodes(self) -> list[dict[str, Any]]:
        local = self._local_status()
        ids = sorted(self._peers)
        return list(await asyncio.gather(*(self._ask_node(i, local) for i in ids)))

    async def _ask_node(self, node_id: NodeId, local: dict[str, Any]) -> dict[str, Any]:
        url = self._peers[node_id]
        seen: dict[str, Any] = {"id": node_id, "url": url, "self": node_id == local["id"]}
        if seen["self"]:
            return {**seen, "reachable": True, "rtt_seconds": 0.0, "error": None, "status": local}
        started = time.monotonic()
        try:
            answer = await self._client.get(
                url + "/v1/status",
                timeout=PEER_STATUS_TIMEOUT,
                headers={"accept": "application/json"},
            )
            answer.raise_for_status()
            status = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
            return {**seen, "reachable": False, "rtt_seconds": None, "error": error, "status": None}
        rtt = time.monotonic() - started
        return {**seen, "reachable": True, "rtt_seconds": rtt, "error": None, "status": status}
