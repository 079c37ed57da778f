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

from control.commands import (
    DEFAULT_POOL,
    ActivateBackend,
    AddBackend,
    Command,
    CommandCodecError,
    CreatePool,
    DrainBackend,
    Health,
    JSONValue,
    Noop,
    RemoveBackend,
    Rollback,
    SetHealth,
    Stamp,
    command_from_bytes,
)
from ringleader.backend_url import BackendSpec, BackendURLError, parse_backend_url
from ringleader.ring.hashes import KEY_HASHES
from ringleader.wire import ActiveMember, RingDocument, RingMember

EVENT_HISTORY = 1000
RING_HISTORY = 256
REQUEST_ID_MEMORY = 10_000
# Format 1 also cached each refusal's HTTP status; format 2 does not.
SNAPSHOT_FORMAT = 2


class AdminState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    REMOVED = "removed"


class FailureCode(StrEnum):
    """Why the registry refused a command. The values are part of the API and snapshots."""

    BAD_COMMAND = "bad_command"
    BAD_BACKEND = "bad_backend"
    BAD_POOL = "bad_pool"
    BAD_HASH = "bad_hash"
    UNKNOWN_POOL = "unknown_pool"
    UNKNOWN_BACKEND = "unknown_backend"
    UNKNOWN_EPOCH = "unknown_epoch"
    DUPLICATE_BACKEND = "duplicate_backend"
    DUPLICATE_POOL = "duplicate_pool"


class Refusal(ValueError):
    """A command the registry refuses; it becomes the command's `Refused` outcome."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Applied:
    """A command that took effect, or changed nothing because its effect was there already
    (`unchanged`). `epoch` is its pool's epoch after it; None for a no-op."""

    epoch: int | None = None
    unchanged: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True}
        if self.epoch is not None:
            out["epoch"] = self.epoch
        if self.unchanged:
            out["unchanged"] = True
        return out


@dataclass(frozen=True, slots=True)
class Refused:
    code: FailureCode
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code.value, "message": self.message}


Outcome = Applied | Refused


def outcome_from_json(raw: dict[str, Any]) -> Outcome:
    """Parses `to_json` output; a format 1 snapshot's `status` is dropped."""
    if "error" in raw:
        return Refused(FailureCode(raw["error"]), raw["message"])
    return Applied(raw.get("epoch"), raw.get("unchanged", False))


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
    """Implements control.node.StateMachine."""

    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {DEFAULT_POOL: Pool(DEFAULT_POOL)}
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self.applied_index = 0
        # request id -> outcome, so a retried command applies once.
        self._results: OrderedDict[str, Outcome] = OrderedDict()

    # -- applying -------------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> Outcome:
        """Applies the command committed at `index` and returns its outcome.

        A refused command changes nothing; the refusal is itself deterministic, so every
        replica refuses it too.
        """
        self.skip(index)
        try:
            stamped = command_from_bytes(data)
        except CommandCodecError as exc:
            return Refused(FailureCode.BAD_COMMAND, str(exc))
        request_id = stamped.stamp.request_id
        if request_id is not None and request_id in self._results:
            return self._results[request_id]
        try:
            outcome: Outcome = self._apply(index, stamped.command, stamped.stamp)
        except Refusal as exc:
            outcome = Refused(exc.code, str(exc))
        if request_id is not None:
            self._results[request_id] = outcome
            while len(self._results) > REQUEST_ID_MEMORY:
                self._results.popitem(last=False)
        return outcome

    def skip(self, index: int) -> None:
        """Moves past the entry at `index`, which carries no command."""
        if index <= self.applied_index:
            raise ValueError(f"entry {index} applied twice (applied {self.applied_index})")
        self.applied_index = index

    def _apply(self, index: int, command: Command, stamp: Stamp) -> Applied:
        match command:
            case AddBackend():
                return self._add_backend(index, command, stamp)
            case RemoveBackend():
                return self._set_admin(index, command, stamp, AdminState.REMOVED, "remove")
            case DrainBackend():
                return self._set_admin(index, command, stamp, AdminState.DRAINING, "drain")
            case ActivateBackend():
                return self._set_admin(index, command, stamp, AdminState.ACTIVE, "activate")
            case SetHealth():
                return self._set_health(index, command, stamp)
            case Rollback():
                return self._rollback(index, command, stamp)
            case CreatePool():
                return self._create_pool(index, command, stamp)
            case Noop():
                return Applied()

    def _pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            raise Refusal(FailureCode.UNKNOWN_POOL, f"no pool named {name!r}")
        return pool

    def _backend(self, pool: Pool, name: str) -> Backend:
        backend = pool.backends.get(name)
        if backend is None or backend.admin is AdminState.REMOVED:
            raise Refusal(
                FailureCode.UNKNOWN_BACKEND, f"pool {pool.name!r} has no backend {name!r}"
            )
        return backend

    def _ring_changed(
        self, index: int, pool: Pool, stamp: Stamp, kind: str, backend: str | None,
        evidence: JSONValue = None,
    ) -> Applied:  # fmt: skip
        pool.epoch = index
        pool.rings[index] = [(b.name, b.url, b.weight) for b in pool.members()]
        while len(pool.rings) > RING_HISTORY:
            pool.rings.popitem(last=False)
        self._record(index, pool, stamp, kind, backend, evidence)
        return Applied(pool.epoch)

    def _record(
        self, index: int, pool: Pool, stamp: Stamp, kind: str, backend: str | None,
        evidence: JSONValue = None,
    ) -> None:  # fmt: skip
        self.events.append(
            Event(
                index=index, epoch=pool.epoch, time=stamp.time, pool=pool.name, kind=kind,
                backend=backend, who=stamp.who, why=stamp.why, evidence=evidence,
            )
        )  # fmt: skip

    def _add_backend(self, index: int, c: AddBackend, stamp: Stamp) -> Applied:
        pool = self._pool(c.pool)
        spec = validate_backend_url(c.url)
        existing = pool.backends.get(spec.name)
        if existing is not None and existing.admin is not AdminState.REMOVED:
            if existing.url == spec.url:
                # Idempotent: registering the same backend twice is not an error.
                return Applied(pool.epoch, unchanged=True)
            raise Refusal(FailureCode.DUPLICATE_BACKEND, f"pool {pool.name!r} already has a "
                          f"backend named {spec.name!r} ({existing.url})")  # fmt: skip
        pool.backends.pop(spec.name, None)  # a re-added backend goes to the end, as new
        pool.backends[spec.name] = Backend(
            spec.name, spec.url, spec.weight, health_since=stamp.time
        )
        return self._ring_changed(index, pool, stamp, "add", spec.name)

    def _set_admin(
        self, index: int, c: RemoveBackend | DrainBackend | ActivateBackend, stamp: Stamp,
        admin: AdminState, kind: str,
    ) -> Applied:  # fmt: skip
        pool = self._pool(c.pool)
        backend = self._backend(pool, c.backend)
        if backend.admin is admin:
            return Applied(pool.epoch, unchanged=True)
        was_member = backend.in_ring
        backend.admin = admin
        return self._changed(index, pool, stamp, kind, backend, was_member)

    def _set_health(self, index: int, c: SetHealth, stamp: Stamp) -> Applied:
        pool = self._pool(c.pool)
        backend = self._backend(pool, c.backend)
        if backend.health is c.health:
            return Applied(pool.epoch, unchanged=True)
        was_member = backend.in_ring
        backend.health = c.health
        backend.health_since = stamp.time
        backend.health_reason = stamp.why
        kind = "mark_up" if c.health is Health.UP else "mark_down"
        return self._changed(index, pool, stamp, kind, backend, was_member, c.evidence)

    def _changed(
        self, index: int, pool: Pool, stamp: Stamp, kind: str, backend: Backend,
        was_member: bool, evidence: JSONValue = None,
    ) -> Applied:  # fmt: skip
        """Records the change; a new epoch only if ring membership actually changed."""
        if was_member == backend.in_ring:
            self._record(index, pool, stamp, kind, backend.name, evidence)
            return Applied(pool.epoch)
        return self._ring_changed(index, pool, stamp, kind, backend.name, evidence)

    def _rollback(self, index: int, c: Rollback, stamp: Stamp) -> Applied:
        pool = self._pool(c.pool)
        target = c.epoch
        if target not in pool.rings:
            known = ", ".join(str(e) for e in pool.rings) or "none"
            raise Refusal(FailureCode.UNKNOWN_EPOCH, f"pool {pool.name!r} has no ring at "
                          f"epoch {target!r}; known epochs: {known}")  # fmt: skip
        members = {name: (url, weight) for name, url, weight in pool.rings[target]}
        for name, (url, weight) in members.items():
            backend = pool.backends.get(name)
            if backend is None or backend.url != url:
                backend = pool.backends[name] = Backend(name, url, weight)
            backend.admin = AdminState.ACTIVE
            backend.weight = weight
            if backend.health is not Health.UP:
                backend.health = Health.UP
                backend.health_since = stamp.time
                backend.health_reason = f"rollback to epoch {target}"
        for backend in pool.backends.values():
            if backend.name not in members and backend.admin is AdminState.ACTIVE:
                backend.admin = AdminState.DRAINING
        # Ring order follows insertion order; restore the old ring's order exactly.
        order = [name for name, _, _ in pool.rings[target]]
        rest = [n for n in pool.backends if n not in members]
        pool.backends = {n: pool.backends[n] for n in [*order, *rest]}
        return self._ring_changed(index, pool, stamp, "rollback", None, {"epoch": target})

    def _create_pool(self, index: int, c: CreatePool, stamp: Stamp) -> Applied:
        name = c.pool
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise Refusal(FailureCode.BAD_POOL, "a pool name is letters, digits, - and _")
        hash_name = validate_hash(c.hash)
        if not 1 <= c.replicas <= 5:
            raise Refusal(FailureCode.BAD_POOL, "replicas must be a whole number from 1 to 5")
        existing = self.pools.get(name)
        if existing is not None:
            if (existing.hash, existing.replicas) == (hash_name, c.replicas):
                return Applied(existing.epoch, unchanged=True)
            raise Refusal(FailureCode.DUPLICATE_POOL, f"pool {name!r} exists with other settings")
        pool = self.pools[name] = Pool(name, hash_name, replicas=c.replicas)
        return self._ring_changed(index, pool, stamp, "create_pool", None)

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
                "results": [[k, v.to_json()] for k, v in self._results.items()],
            },
            separators=(",", ":"),
        ).encode()  # fmt: skip

    def restore(self, data: bytes) -> None:
        """Replaces this registry's state with the snapshot's."""
        other = Registry.from_snapshot(data)
        self.pools, self.events = other.pools, other.events
        self.applied_index, self._results = other.applied_index, other._results

    @classmethod
    def from_snapshot(cls, data: bytes) -> Registry:
        raw = json.loads(data)
        if raw.get("format") not in (1, SNAPSHOT_FORMAT):
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
        registry._results = OrderedDict((k, outcome_from_json(v)) for k, v in raw["results"])
        return registry


def validate_backend_url(url: object) -> BackendSpec:
    if not isinstance(url, str):
        raise Refusal(FailureCode.BAD_BACKEND, "a backend needs a url string")
    try:
        return parse_backend_url(url)
    except BackendURLError as exc:
        raise Refusal(FailureCode.BAD_BACKEND, str(exc)) from None


def validate_hash(name: object) -> str:
    if not isinstance(name, str) or name not in KEY_HASHES:
        raise Refusal(FailureCode.BAD_HASH, f"hash must be one of {', '.join(KEY_HASHES)}")
    return name
