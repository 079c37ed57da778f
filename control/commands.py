"""The registry's commands, one frozen dataclass each, and their versioned encoding.

Format version 1: a command is a JSON object with ``"v": 1``, ``"op"`` (the command's
snake_case name), its fields by name, and its stamp's fields (``time``, ``who``, ``why``,
``request_id``) beside them. Decoders ignore unknown keys and fill absent fields that have
defaults, so a field with a default can be added without a version bump.

Version 0 is the untyped form logs held before: the same object without ``"v"``, in which
``pool``, ``time`` and ``who`` may be absent. It is decoded still, so those logs replay.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

VERSION = 1
DEFAULT_POOL = "default"

# The JSON a command's evidence holds; the registry stores it as given.
JSONValue = typing.Any


class Health(StrEnum):
    UP = "up"
    DOWN = "down"


class CommandCodecError(ValueError):
    """The input is not a valid encoded command; the message names the field at fault."""


@dataclass(frozen=True, slots=True)
class AddBackend:
    pool: str
    url: str


@dataclass(frozen=True, slots=True)
class RemoveBackend:
    pool: str
    backend: str


@dataclass(frozen=True, slots=True)
class DrainBackend:
    pool: str
    backend: str


@dataclass(frozen=True, slots=True)
class ActivateBackend:
    pool: str
    backend: str


@dataclass(frozen=True, slots=True)
class SetHealth:
    pool: str
    backend: str
    health: Health
    evidence: JSONValue = None


@dataclass(frozen=True, slots=True)
class Rollback:
    pool: str
    epoch: int


@dataclass(frozen=True, slots=True)
class CreatePool:
    pool: str
    hash: str = "fnv1a_64"
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class Noop:
    pass


Command = (
    AddBackend | RemoveBackend | DrainBackend | ActivateBackend | SetHealth | Rollback
    | CreatePool | Noop
)  # fmt: skip
COMMAND_TYPES: tuple[type[Command], ...] = typing.get_args(Command)


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who proposed a command, when and why. The proposer sets it, so replicas agree on it;
    a retry with the same `request_id` applies once."""

    time: float
    who: str
    why: str = ""
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Stamped:
    command: Command
    stamp: Stamp


def _name(cls: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise CommandCodecError(f"expected a string, got {value!r}")
    return value


def _optional_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object) -> int:
    if type(value) is not int:
        raise CommandCodecError(f"expected a whole number, got {value!r}")
    return value


def _float(value: object) -> float:
    if type(value) not in (int, float) or not math.isfinite(typing.cast(float, value)):
        raise CommandCodecError(f"expected a finite number, got {value!r}")
    return float(typing.cast(float, value))


def _health(value: object) -> Health:
    try:
        return Health(_str(value))
    except ValueError:
        raise CommandCodecError(f"expected 'up' or 'down', got {value!r}") from None


def _any(value: object) -> JSONValue:
    return value


_DECODERS: dict[object, Callable[[object], object]] = {
    str: _str,
    str | None: _optional_str,
    int: _int,
    float: _float,
    Health: _health,
    JSONValue: _any,
}

# name -> decoder, default (MISSING if required), per dataclass.
_Fields = list[tuple[str, Callable[[object], object], object]]


def _schema(cls: type) -> _Fields:
    hints = typing.get_type_hints(cls, globalns=globals())
    return [(f.name, _DECODERS[hints[f.name]], f.default) for f in dataclasses.fields(cls)]


_SCHEMA: dict[str, tuple[type[Command], _Fields]] = {
    _name(cls): (cls, _schema(cls)) for cls in COMMAND_TYPES
}
_NAMES = {cls: name for name, (cls, _) in _SCHEMA.items()}
_STAMP_FIELDS = _schema(Stamp)
# Version 0 proposers left these out; the registry then read them with these defaults.
_V0_DEFAULTS: dict[str, object] = {"pool": DEFAULT_POOL, "time": 0.0, "who": "unknown"}


def encode_command(stamped: Stamped) -> dict[str, object]:
    """The JSON-compatible form of `stamped`."""
    command = stamped.command
    out: dict[str, object] = {"v": VERSION, "op": _NAMES[type(command)]}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        out[f.name] = value.value if isinstance(value, Health) else value
    for f in dataclasses.fields(Stamp):
        out[f.name] = getattr(stamped.stamp, f.name)
    return out


def _decode_fields(
    what: str, d: Mapping[str, object], fields: _Fields, defaults: Mapping[str, object]
) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for name, decode, default in fields:
        if name in d:
            try:
                kwargs[name] = decode(d[name])
            except CommandCodecError as exc:
                raise CommandCodecError(f"{what}: field {name!r}: {exc}") from None
        elif name in defaults:
            kwargs[name] = defaults[name]
        elif default is dataclasses.MISSING:
            raise CommandCodecError(f"{what}: field {name!r} is missing")
    return kwargs


def decode_command(value: object) -> Stamped:
    """Parses the output of :func:`encode_command`, or a version 0 command; raises
    CommandCodecError naming the field at fault."""
    if not isinstance(value, Mapping):
        raise CommandCodecError(f"a command is a JSON object, got {value!r}")
    version = value.get("v", 0)
    if version not in (0, VERSION) or type(version) is not int:
        raise CommandCodecError(f"unsupported command version {version!r}")
    op = value.get("op")
    if not isinstance(op, str) or op not in _SCHEMA:
        raise CommandCodecError(f"field 'op': unknown command {op!r}")
    cls, fields = _SCHEMA[op]
    defaults = _V0_DEFAULTS if version == 0 else {}
    command = cls(**_decode_fields(op, value, fields, defaults))  # type: ignore[arg-type]
    stamp = Stamp(**_decode_fields(op, value, _STAMP_FIELDS, defaults))  # type: ignore[arg-type]
    return Stamped(command, stamp)


def command_to_bytes(stamped: Stamped) -> bytes:
    """What the log stores for `stamped`."""
    return json.dumps(encode_command(stamped), separators=(",", ":")).encode()


def command_from_bytes(data: bytes) -> Stamped:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandCodecError(f"undecodable command: {exc}") from None
    return decode_command(value)
