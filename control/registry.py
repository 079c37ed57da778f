"""The registry: the replicated state machine behind the control plane.

It holds pools and their backends and applies committed commands deterministically: every
replica that applies the same log reaches the same state, so nothing here reads a clock,
a random source or the network. The proposer stamps each command with its time.

Ring epochs: a pool's epoch is the log index of the last command that changed its ring, so
epochs only go up and every replica agrees on them.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from ringleader.backend_url import BackendSpec, BackendURLError, parse_backend_url
from ringleader.ring.hashes import KEY_HASHES
from ringleader.wire import ActiveMember, RingDocument, RingMember

DEFAULT_POOL = "default"
EVENT_HISTORY = 1000
RING_HISTORY = 256
REQUEST_ID_MEMORY = 10_000
SNAPSHOT_FORMAT = 1


class AdminState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    REMOVED = "removed"


class Health(StrEnum):
    UP = "up"
    DOWN = "down"


class CommandError(ValueError):
    """A command the registry refuses; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(slots=True)
class Backend:
    name: str
    url: str
    weight: int
    admin: AdminState = AdminState.ACTIVE
    health: Health = Health.UP
    health_since: float = 0.0
    health_reason: str = ""

    @property
    def in_ring(self) -> bool:
        return self.admin is AdminState.ACTIVE and self.health is Health.UP

    def spec(self) -> BackendSpec:
        return parse_backend_url(self.url)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["admin"] = self.admin.value
        out["health"] = self.health.value
        out["in_ring"] = self.in_ring
        return out


@dataclass(slots=True)
class Pool:
    name: str
    hash: str = "fnv1a_64"
    distribution: str = "ketama"
    replicas: int = 1
    epoch: int = 0
    backends: dict[str, Backend] = field(default_factory=dict)
    # epoch -> ring members (name, url, weight), for rollback; bounded.
    rings: OrderedDict[int, list[tuple[str, str, int]]] = field(default_factory=OrderedDict)

    def members(self) -> list[Backend]:
        """The ring's backends, in the order they were added (ketama order matters)."""
        return [b for b in self.backends.values() if b.in_ring]

    def ring_document(self) -> RingDocument:
        return RingDocument(
            pool=self.name,
            epoch=self.epoch,
            hash=self.hash,
            distribution=self.distribution,
            replicas=self.replicas,
            backends=tuple(RingMember(b.name, b.url, b.weight) for b in self.members()),
            active=tuple(
                ActiveMember(b.name, b.url, b.weight, b.health.value)
                for b in self.backends.values()
                if b.admin is AdminState.ACTIVE
            ),
        )


@dataclass(frozen=True, slots=True)
class Event:
    index: int
    epoch: int
    time: float
    pool: str
    kind: str
    backend: str | None
    who: str
    why: str
    evidence: Any

    def as_json(self) -> dict[str, Any]:
        # Not asdict(): its deep copy of `evidence` (plain JSON already, shared read-only
        # here) was two thirds of the cost of a registry snapshot.
        return {name: getattr(self, name) for name in _EVENT_FIELDS}


_EVENT_FIELDS = tuple(f.name for f in fields(Event))


class Registry:
    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {DEFAULT_POOL: Pool(DEFAULT_POOL)}
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self.applied_index = 0
        # request id -> result, so a retried command applies once.
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # -- applying -------------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> dict[str, Any]:
        """Applies the command committed at `index` and returns its result.

        A refused command changes nothing and returns `{"error": ..., "status": ...}`; the
        refusal is itself deterministic, so every replica refuses it too.
        """
        if index <= self.applied_index:
            raise ValueError(f"entry {index} applied twice (applied {self.applied_index})")
        self.applied_index = index
        try:
            command = json.loads(data)
            if not isinstance(command, dict):
                raise CommandError(400, "bad_command", "a command is a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(CommandError(400, "bad_command", f"undecodable command: {exc}"))
        request_id = command.get("request_id")
        if isinstance(request_id, str) and request_id in self._results:
            return self._results[request_id]
        try:
            result = self._apply(index, command)
        except CommandError as exc:
            result = _error(exc)
        if isinstance(request_id, str):
            self._results[request_id] = result
            while len(self._results) > REQUEST_ID_MEMORY:
                self._results.popitem(last=False)
        return result

    def _apply(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        op = c.get("op")
        handler = _HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise CommandError(400, "bad_command", f"unknown command {op!r}")
        return handler(self, index, c)

    def _pool(self, c: dict[str, Any]) -> Pool:
        name = c.get("pool", DEFAULT_POOL)
        pool = self.pools.get(name) if isinstance(name, str) else None
        if pool is None:
            raise CommandError(404, "unknown_pool", f"no pool named {name!r}")
        return pool

    def _backend(self, pool: Pool, c: dict[str, Any]) -> Backend:
        name = c.get("backend")
        backend = pool.backends.get(name) if isinstance(name, str) else None
        if backend is None or backend.admin is AdminState.REMOVED:
            raise CommandError(
                404, "unknown_backend", f"pool {pool.name!r} has no backend {name!r}"
            )
        return backend

    def _ring_changed(
        self, index: int, pool: Pool, c: dict[str, Any], kind: str, backend: str | None
    ) -> dict[str, Any]:
        pool.epoch = index
        pool.rings[index] = [(b.name, b.url, b.weight) for b in pool.members()]
        while len(pool.rings) > RING_HISTORY:
            pool.rings.popitem(last=False)
        self._record(index, pool, c, kind, backend)
        return {"ok": True, "epoch": pool.epoch}

    def _record(
        self, index: int, pool: Pool, c: dict[str, Any], kind: str, backend: str | None
    ) -> None:
        self.events.append(
            Event(
                index=index,
                epoch=pool.epoch,
                time=float(c.get("time", 0.0)),
                pool=pool.name,
                kind=kind,
                backend=backend,
                who=str(c.get("who", "unknown")),
                why=str(c.get("why", "")),
                evidence=c.get("evidence"),
            )
        )

    def add_backend(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(c)
        spec = validate_backend_url(c.get("url"))
        existing = pool.backends.get(spec.name)
        if existing is not None and existing.admin is not AdminState.REMOVED:
            if existing.url == spec.url:
                # Idempotent: registering the same backend twice is not an error.
                return {"ok": True, "epoch": pool.epoch, "unchanged": True}
            raise CommandError(409, "duplicate_backend", f"pool {pool.name!r} already has a "
                               f"backend named {spec.name!r} ({existing.url})")  # fmt: skip
        pool.backends.pop(spec.name, None)  # a re-added backend goes to the end, as new
        pool.backends[spec.name] = Backend(
            spec.name, spec.url, spec.weight, health_since=float(c.get("time", 0.0))
        )
        return self._ring_changed(index, pool, c, "add", spec.name)

    def remove_backend(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        return self._set_admin(index, c, AdminState.REMOVED, "remove")

    def drain_backend(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        return self._set_admin(index, c, AdminState.DRAINING, "drain")

    def activate_backend(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        return self._set_admin(index, c, AdminState.ACTIVE, "activate")

    def _set_admin(
        self, index: int, c: dict[str, Any], admin: AdminState, kind: str
    ) -> dict[str, Any]:
        pool = self._pool(c)
        backend = self._backend(pool, c)
        if backend.admin is admin:
            return {"ok": True, "epoch": pool.epoch, "unchanged": True}
        was_member = backend.in_ring
        backend.admin = admin
        return self._changed(index, pool, c, kind, backend, was_member)

    def set_health(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(c)
        backend = self._backend(pool, c)
        try:
            health = Health(str(c.get("health")))
        except ValueError:
            raise CommandError(400, "bad_command", "health must be 'up' or 'down'") from None
        if backend.health is health:
            return {"ok": True, "epoch": pool.epoch, "unchanged": True}
        was_member = backend.in_ring
        backend.health = health
        backend.health_since = float(c.get("time", 0.0))
        backend.health_reason = str(c.get("why", ""))
        kind = "mark_up" if health is Health.UP else "mark_down"
        return self._changed(index, pool, c, kind, backend, was_member)

    def _changed(
        self, index: int, pool: Pool, c: dict[str, Any], kind: str, backend: Backend,
        was_member: bool,
    ) -> dict[str, Any]:  # fmt: skip
        """Records the change; a new epoch only if ring membership actually changed."""
        if was_member == backend.in_ring:
            self._record(index, pool, c, kind, backend.name)
            return {"ok": True, "epoch": pool.epoch}
        return self._ring_changed(index, pool, c, kind, backend.name)

    def rollback(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(c)
        target = c.get("epoch")
        if not isinstance(target, int) or target not in pool.rings:
            known = ", ".join(str(e) for e in pool.rings) or "none"
            raise CommandError(404, "unknown_epoch", f"pool {pool.name!r} has no ring at epoch "
                               f"{target!r}; known epochs: {known}")  # fmt: skip
        members = {name: (url, weight) for name, url, weight in pool.rings[target]}
        time = float(c.get("time", 0.0))
        for name, (url, weight) in members.items():
            backend = pool.backends.get(name)
            if backend is None or backend.url != url:
                backend = pool.backends[name] = Backend(name, url, weight)
            backend.admin = AdminState.ACTIVE
            backend.weight = weight
            if backend.health is not Health.UP:
                backend.health = Health.UP
                backend.health_since = time
                backend.health_reason = f"rollback to epoch {target}"
        for backend in pool.backends.values():
            if backend.name not in members and backend.admin is AdminState.ACTIVE:
                backend.admin = AdminState.DRAINING
        # Ring order follows insertion order; restore the old ring's order exactly.
        order = [name for name, _, _ in pool.rings[target]]
        rest = [n for n in pool.backends if n not in members]
        pool.backends = {n: pool.backends[n] for n in [*order, *rest]}
        return self._ring_changed(index, pool, {**c, "evidence": {"epoch": target}},
                                  "rollback", None)  # fmt: skip

    def create_pool(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        name = c.get("pool")
        if (
            not isinstance(name, str)
            or not name
            or not name.replace("-", "").replace("_", "").isalnum()
        ):
            raise CommandError(400, "bad_pool", "a pool name is letters, digits, - and _")
        hash_name = validate_hash(c.get("hash", "fnv1a_64"))
        replicas = c.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise CommandError(400, "bad_pool", "replicas must be a whole number from 1 to 5")
        existing = self.pools.get(name)
        if existing is not None:
            if (existing.hash, existing.replicas) == (hash_name, replicas):
                return {"ok": True, "epoch": existing.epoch, "unchanged": True}
            raise CommandError(409, "duplicate_pool", f"pool {name!r} exists with other settings")
        pool = self.pools[name] = Pool(name, hash_name, replicas=replicas)
        return self._ring_changed(index, pool, c, "create_pool", None)

    def noop(self, index: int, c: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    # -- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return json.dumps(
            {
                "format": SNAPSHOT_FORMAT,
                "applied_index": self.applied_index,
                "pools": {
                    name: {
                        "hash": p.hash, "distribution": p.distribution, "replicas": p.replicas,
                        "epoch": p.epoch,
                        "backends": [b.as_json() for b in p.backends.values()],
                        "rings": [[e, m] for e, m in p.rings.items()],
                    }
                    for name, p in self.pools.items()
                },
                "events": [e.as_json() for e in self.events],
                "results": list(self._results.items()),
            },
            separators=(",", ":"),
        ).encode()  # fmt: skip

    @classmethod
    def restore(cls, data: bytes) -> Registry:
        raw = json.loads(data)
        if raw.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"registry snapshot format {raw.get('format')!r} is not supported")
        registry = cls()
        registry.applied_index = raw["applied_index"]
        registry.pools = {}
        for name, p in raw["pools"].items():
            pool = Pool(name, p["hash"], p["distribution"], p["replicas"], p["epoch"])
            for b in p["backends"]:
                pool.backends[b["name"]] = Backend(
                    b["name"], b["url"], b["weight"], AdminState(b["admin"]),
                    Health(b["health"]), b["health_since"], b["health_reason"],
                )  # fmt: skip
            pool.rings = OrderedDict((e, [(n, u, w) for n, u, w in m]) for e, m in p["rings"])
            registry.pools[name] = pool
        registry.events = deque((Event(**e) for e in raw["events"]), maxlen=EVENT_HISTORY)
        registry._results = OrderedDict((k, v) for k, v in raw["results"])
        return registry


def validate_backend_url(url: Any) -> BackendSpec:
    if not isinstance(url, str):
        raise CommandError(400, "bad_backend", "a backend needs a url string")
    try:
        return parse_backend_url(url)
    except BackendURLError as exc:
        raise CommandError(400, "bad_backend", str(exc)) from None


def validate_hash(name: Any) -> str:
    if not isinstance(name, str) or name not in KEY_HASHES:
        raise CommandError(400, "bad_hash", f"hash must be one of {', '.join(KEY_HASHES)}")
    return name


def _error(exc: CommandError) -> dict[str, Any]:
    return {"error": exc.code, "message": str(exc), "status": exc.status}


_HANDLERS = {
    "add_backend": Registry.add_backend,
    "remove_backend": Registry.remove_backend,
    "drain_backend": Registry.drain_backend,
    "activate_backend": Registry.activate_backend,
    "set_health": Registry.set_health,
    "rollback": Registry.rollback,
    "create_pool": Registry.create_pool,
    "noop": Registry.noop,
}
