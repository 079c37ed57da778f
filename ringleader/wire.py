"""The documents the two planes exchange: the ring a pool routes with, a proxy's health
report, and the control plane's view of its reporting proxies. Each is written by one side
and read by another, so both use these types.

Compatibility: the JSON field names are those of the first, untyped version. Every document
carries its format version in `v`; a reader takes a missing `v` as version 1 (what nodes
that predate it write) and ignores fields it does not know, so a field can be added without
a version bump. A reader refuses a version it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeGuard, TypeVar

from ringleader.backend_url import BackendSpec, BackendURLError, parse_backend_url
from ringleader.ring.hashes import KEY_HASHES

VERSION = 1

Health = Literal["up", "down"]
HEALTH: tuple[Health, ...] = ("up", "down")
# A proxy's own verdict; `unknown` until its first probe answers.
ProbeState = Literal["unknown", "up", "down"]
PROBE_STATES: tuple[ProbeState, ...] = ("unknown", "up", "down")


_Choice = TypeVar("_Choice", bound=str)


class WireError(ValueError):
    """A document that cannot be read; the message names the document and the field."""


@dataclass(frozen=True, slots=True)
class RingMember:
    """A backend in the ring."""

    name: str
    url: str
    weight: int

    def spec(self) -> BackendSpec:
        return parse_backend_url(self.url)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "weight": self.weight}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(f.string("name"), f.backend_url("url"), f.positive_int("weight"))


@dataclass(frozen=True, slots=True)
class ActiveMember:
    """An admin-active backend, in the ring or out of it only because it is down."""

    name: str
    url: str
    weight: int
    health: Health

    def spec(self) -> BackendSpec:
        return parse_backend_url(self.url)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "weight": self.weight, "health": self.health}

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(
            f.string("name"),
            f.backend_url("url"),
            f.positive_int("weight"),
            f.choice("health", HEALTH),
        )


@dataclass(frozen=True, slots=True)
class RingDocument:
    """A pool's ring at one epoch, as `GET /v1/pools/{pool}/ring` serves it."""

    pool: str
    epoch: int
    hash: str
    distribution: str
    replicas: int
    backends: tuple[RingMember, ...]  # in ring order: ketama placement depends on it
    # Admin-active backends in ring order, down ones included: the ring every key's owner
    # is computed from while some backend is down.
    active: tuple[ActiveMember, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "pool": self.pool,
            "epoch": self.epoch,
            "hash": self.hash,
            "distribution": self.distribution,
            "replicas": self.replicas,
            "backends": [b.to_json() for b in self.backends],
            "active": [b.to_json() for b in self.active],
        }

    @classmethod
    def from_json(cls, data: object) -> Self:
        f = _Fields.open("ring document", data)
        return cls(
            pool=f.string("pool"),
            epoch=f.whole("epoch"),
            hash=f.choice("hash", tuple(KEY_HASHES)),
            distribution=f.string("distribution"),
            replicas=f.positive_int("replicas"),
            backends=tuple(RingMember._read(b) for b in f.objects("backends")),
            active=tuple(ActiveMember._read(b) for b in f.objects("active", optional=True)),
        )


@dataclass(frozen=True, slots=True)
class BackendObservation:
    """What one proxy's probes say about one backend."""

    state: ProbeState
    since: float | None = None  # the proxy's wall clock at the last verdict change
    last_error: str | None = None
    rtt_seconds: float | None = None
    consecutive_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            "last_error": self.last_error,
            "rtt_seconds": self.rtt_seconds,
            "consecutive_failures": self.consecutive_failures,
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(
            state=f.choice("state", PROBE_STATES),
            since=f.optional_number("since"),
            last_error=f.optional_string("last_error"),
            rtt_seconds=f.optional_number("rtt_seconds"),
            consecutive_failures=f.whole("consecutive_failures", default=0),
        )


# A request header: a follower answers 503 instead of forwarding the call to the leader, so
# that a client with other control URLs to try moves on and stays with the leader. Proxies
# send it with their reports: forwarding N/2 reports a second costs a follower more CPU
# than the leader spends taking them.
NO_FORWARD = "x-ringleader-no-forward"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A proxy's view of its backends, as `POST /v1/pools/{pool}/reports` takes it."""

    proxy: str  # stable across restarts of one proxy, distinct between proxies
    backends: Mapping[str, BackendObservation]
    interval: float | None = None  # seconds between reports when nothing changes
    # The ring epoch every worker of the proxy routes on (or above); None until known, and
    # from proxies that predate the field.
    epoch: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "proxy": self.proxy,
            "interval": self.interval,
            "epoch": self.epoch,
            "backends": {name: seen.to_json() for name, seen in self.backends.items()},
        }

    @classmethod
    def from_json(cls, data: object) -> Self:
        f = _Fields.open("health report", data)
        return cls(
            proxy=f.string("proxy"),
            backends={name: BackendObservation._read(b) for name, b in f.mapping("backends")},
            interval=f.optional_number("interval", positive=True),
            epoch=f.optional_whole("epoch"),
        )


@dataclass(frozen=True, slots=True)
class ReportingProxy:
    """One proxy as the leader's failure detector last heard from it."""

    proxy: str
    last_seen: float  # unix time of its last report, by the leader's clock
    age_seconds: float
    epoch: int | None  # as its last report said (HealthReport.epoch)
    verdicts: Mapping[str, Health]  # backends it has a verdict on; `unknown` ones left out

    def to_json(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "last_seen": self.last_seen,
            "age_seconds": self.age_seconds,
            "epoch": self.epoch,
            "verdicts": dict(self.verdicts),
        }

    @classmethod
    def _read(cls, f: _Fields) -> Self:
        return cls(
            proxy=f.string("proxy"),
            last_seen=f.number("last_seen"),
            age_seconds=f.number("age_seconds"),
            epoch=f.optional_whole("epoch"),
            verdicts=f.choices("verdicts", HEALTH),
        )


@dataclass(frozen=True, slots=True)
class ProxiesDocument:
    """The proxies that report on a pool, as `GET /v1/pools/{pool}/proxies` serves them."""

    pool: str
    window_seconds: float  # a proxy counts as reporting if its last report is this recent
    proxies: tuple[ReportingProxy, ...]

    def reporting(self) -> tuple[ReportingProxy, ...]:
        return tuple(p for p in self.proxies if p.age_seconds <= self.window_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "pool": self.pool,
            "window_seconds": self.window_seconds,
            "proxies": [p.to_json() for p in self.proxies],
        }

    @classmethod
    def from_json(cls, data: object) -> Self:
        f = _Fields.open("proxies document", data)
        return cls(
            pool=f.string("pool"),
            window_seconds=f.number("window_seconds", positive=True),
            proxies=tuple(ReportingProxy._read(p) for p in f.objects("proxies")),
        )


_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Fields:
    """A JSON object being read and where it sits, so that every error names its field."""

    kind: str  # which document, for messages
    path: str  # "" for the document itself
    data: Mapping[str, object]

    @classmethod
    def open(cls, name: str, data: object) -> _Fields:
        if not isinstance(data, dict):
            raise WireError(f"{name}: expected a JSON object, got {_show(data)}")
        f = cls(name, "", data)
        version = f.data.get("v", VERSION)
        if version != VERSION or isinstance(version, bool):
            raise f.error("v", f"unsupported version {_show(version)}; this node reads {VERSION}")
        return f

    def error(self, key: str, problem: str) -> WireError:
        where = f"{self.path}.{key}" if self.path else key
        return WireError(f"{self.kind}: {where}: {problem}")

    def _get(self, key: str, default: object = _MISSING) -> object:
        value = self.data.get(key, default)
        if value is _MISSING:
            raise self.error(key, "missing")
        return value

    def _expected(self, key: str, what: str, value: object) -> WireError:
        return self.error(key, f"expected {what}, got {_show(value)}")

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise self._expected(key, "a non-empty string", value)
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._get(key, None)
        if value is not None and not isinstance(value, str):
            raise self._expected(key, "a string or null", value)
        return value

    def choice(self, key: str, choices: tuple[_Choice, ...]) -> _Choice:
        value = self._get(key)
        for choice in choices:
            if value == choice:
                return choice
        raise self._expected(key, "one of " + ", ".join(choices), value)

    def whole(self, key: str, default: int | None = None) -> int:
        value = self._get(key, _MISSING if default is None else default)
        if not _is_int(value) or value < 0:
            raise self._expected(key, "a whole number", value)
        return value

    def optional_whole(self, key: str) -> int | None:
        value = self._get(key, None)
        if value is not None and (not _is_int(value) or value < 0):
            raise self._expected(key, "a whole number or null", value)
        return value

    def positive_int(self, key: str) -> int:
        value = self._get(key)
        if not _is_int(value) or value < 1:
            raise self._expected(key, "a positive integer", value)
        return value

    def number(self, key: str, positive: bool = False) -> float:
        return self._number(key, self._get(key), positive, "")

    def optional_number(self, key: str, positive: bool = False) -> float | None:
        value = self._get(key, None)
        return None if value is None else self._number(key, value, positive, " or null")

    def _number(self, key: str, value: object, positive: bool, or_else: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            what = "a positive number" if positive else "a number >= 0"
            raise self._expected(key, what + or_else, value)
        return float(value)

    def backend_url(self, key: str) -> str:
        url = self.string(key)
        try:
            parse_backend_url(url)
        except BackendURLError as exc:
            raise self.error(key, str(exc)) from None
        return url

    def objects(self, key: str, optional: bool = False) -> list[_Fields]:
        items = self._get(key, [] if optional else _MISSING)
        if not isinstance(items, list):
            raise self._expected(key, "a list", items)
        return [self._nested(f"{key}[{i}]", item) for i, item in enumerate(items)]

    def mapping(self, key: str) -> list[tuple[str, _Fields]]:
        items = self._get(key)
        if not isinstance(items, dict):
            raise self._expected(key, "a JSON object", items)
        return [(name, self._nested(f"{key}[{name!r}]", item)) for name, item in items.items()]

    def choices(self, key: str, choices: tuple[_Choice, ...]) -> dict[str, _Choice]:
        """A JSON object whose every value is one of `choices`."""
        items = self._nested(key, self._get(key))
        return {name: items.choice(name, choices) for name in items.data}

    def _nested(self, key: str, value: object) -> _Fields:
        if not isinstance(value, dict):
            raise self._expected(key, "a JSON object", value)
        return _Fields(self.kind, f"{self.path}.{key}" if self.path else key, value)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
