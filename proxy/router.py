"""The ring a proxy routes with, swapped atomically, and the clients of its backends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from proxy.telemetry import CounterChild, CounterFamily
from ringleader.backend_url import BackendSpec
from ringleader.backends import CacheClient, ClientSettings, make_client
from ringleader.ring import KetamaRing


@dataclass(frozen=True, slots=True)
class RingState:
    """What a ring is built from: the unit the control plane commits and proxies swap."""

    epoch: int
    hash_name: str
    backends: tuple[BackendSpec, ...]
    # Every admin-active backend, down ones included, in ring order; empty when none is
    # down. It tells which writes land somewhere only because their owner is down.
    owners: tuple[BackendSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Everything a request needs about one backend, prepared once per ring."""

    spec: BackendSpec
    client: CacheClient
    headers: tuple[tuple[bytes, bytes], ...]
    failover_writes: CounterChild


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """An immutable snapshot: a request keeps the table it started with even if a new
    ring is installed meanwhile, so one request never mixes two epochs."""

    state: RingState
    ring: KetamaRing | None  # None while the pool has no backends in its ring
    failover_ttl: int
    routes: dict[str, Route] = field(default_factory=dict)
    owner_ring: KetamaRing | None = None

    def route(self, key: bytes) -> Route | None:
        if self.ring is None:
            return None
        return self.routes[self.ring.lookup(key).name]

    def is_failover(self, key: bytes, route: Route) -> bool:
        """Whether `key` routes to `route` only because its owner is down."""
        return self.owner_ring is not None and self.owner_ring.lookup(key).name != route.spec.name

    def write_ttl(self, key: bytes, route: Route, ttl: int) -> int:
        """The TTL every writer gives `key` on `route`: `ttl` (0: no expiry), capped at
        `failover_ttl` when the key lands there only because its owner is down
        (docs/invariants.md, invariant 3: bounded staleness after the owner rejoins)."""
        if not self.is_failover(key, route):
            return ttl
        route.failover_writes.inc()
        return self.failover_ttl if ttl == 0 else min(ttl, self.failover_ttl)


class Router:
    def __init__(
        self,
        settings: ClientSettings,
        initial: RingState,
        failover_ttl: int,
        failover_writes: CounterFamily,
        hash_tag: bytes | None = None,
    ) -> None:
        # From the proxy's own config, not the ring: every proxy of a pool must use the same
        # tag, or they place tagged keys differently.
        self._hash_tag = hash_tag
        self._settings = settings
        self._failover_ttl = failover_ttl
        self._failover_writes = failover_writes
        self._clients: dict[BackendSpec, CacheClient] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self.table = self._build(initial)

    def install(self, state: RingState) -> bool:
        """Swaps in `state` if it is newer than the current ring; epochs only go up, so an
        older or equal epoch (say, from a lagging control node) is ignored.

        Clients of backends that left the ring are closed after a grace period, once the
        requests that started with the old table are done.
        """
        if state.epoch <= self.table.state.epoch:
            return False
        self.table = self._build(state)
        live = set(state.backends)
        retired = [c for spec, c in self._clients.items() if spec not in live]
        self._clients = {spec: c for spec, c in self._clients.items() if spec in live}
        if retired:
            grace = self._settings.request_timeout + self._settings.connect_timeout
            asyncio.get_running_loop().call_later(grace, self._close_later, retired)
        return True

    def _close_later(self, clients: list[CacheClient]) -> None:
        for client in clients:
            task = asyncio.ensure_future(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _build(self, state: RingState) -> RoutingTable:
        epoch_header = (b"x-ringleader-epoch", str(state.epoch).encode())
        routes: dict[str, Route] = {}
        for spec in state.backends:
            client = self._clients.get(spec)
            if client is None:
                client = self._clients[spec] = make_client(spec, self._settings)
            headers = ((b"x-ringleader-backend", spec.name.encode()), epoch_header)
            failovers = self._failover_writes.labels(spec.name)
            routes[spec.name] = Route(spec, client, headers, failovers)
        tag = self._hash_tag
        ring = KetamaRing(state.backends, state.hash_name, tag) if state.backends else None
        owners = KetamaRing(state.owners, state.hash_name, tag) if state.owners else None
        return RoutingTable(state, ring, self._failover_ttl, routes, owners)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
