"""The ring a proxy routes with, swapped atomically, and the clients of its backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.backend_url import BackendSpec
from proxy.backends import CacheClient, ClientSettings, make_client
from proxy.ring import KetamaRing


@dataclass(frozen=True, slots=True)
class RingState:
    """What a ring is built from: the unit the control plane commits and proxies swap."""

    epoch: int
    hash_name: str
    backends: tuple[BackendSpec, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """Everything a request needs about one backend, prepared once per ring."""

    spec: BackendSpec
    client: CacheClient
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """An immutable snapshot: a request keeps the table it started with even if a new
    ring is installed meanwhile, so one request never mixes two epochs."""

    state: RingState
    ring: KetamaRing
    routes: dict[str, Route] = field(default_factory=dict)

    def route(self, key: bytes) -> Route:
        return self.routes[self.ring.lookup(key).name]


class Router:
    def __init__(self, settings: ClientSettings, initial: RingState) -> None:
        self._settings = settings
        self._clients: dict[BackendSpec, CacheClient] = {}
        self.table = self._build(initial)

    def install(self, state: RingState) -> list[CacheClient]:
        """Swap in `state` unless it is older than the current ring (epochs only go up).

        Returns the clients no longer used, for the caller to close once in-flight requests
        using them are done.
        """
        if state.epoch < self.table.state.epoch:
            raise ValueError(
                f"refusing ring epoch {state.epoch}: already at {self.table.state.epoch}"
            )
        self.table = self._build(state)
        live = set(state.backends)
        retired = [c for spec, c in self._clients.items() if spec not in live]
        self._clients = {spec: c for spec, c in self._clients.items() if spec in live}
        return retired

    def _build(self, state: RingState) -> RoutingTable:
        epoch_header = (b"x-ringleader-epoch", str(state.epoch).encode())
        routes: dict[str, Route] = {}
        for spec in state.backends:
            client = self._clients.get(spec)
            if client is None:
                client = self._clients[spec] = make_client(spec, self._settings)
            headers = ((b"x-ringleader-backend", spec.name.encode()), epoch_header)
            routes[spec.name] = Route(spec, client, headers)
        return RoutingTable(state, KetamaRing(state.backends, state.hash_name), routes)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
