"""Versioned, JSON-compatible encoding of messages for the transport.

Format version 1: a message is an object with ``"v": 1``, ``"type"`` (snake_case message
name), ``"from"``, ``"to"``, ``"term"`` and its other fields by name. Entry and snapshot
data are base64. Decoders ignore unknown keys and fill absent fields that have defaults, so
a field with a default can be added without a version bump.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import typing
from collections.abc import Callable, Mapping

from control.raft.membership import Membership, MembershipError
from control.raft.messages import MESSAGE_TYPES, Message
from control.raft.types import Entry, EntryKind, Snapshot

VERSION = 1


class CodecError(ValueError):
    """The input is not a valid encoded message."""


JSON = dict[str, object]


def _name(cls: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def _key(field: str) -> str:
    return "from" if field == "frm" else field


def _int(value: object) -> int:
    if type(value) is not int or value < 0:
        raise CodecError(f"expected a non-negative integer, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise CodecError(f"expected a boolean, got {value!r}")
    return value


def _bytes(value: object) -> bytes:
    if not isinstance(value, str):
        raise CodecError(f"expected base64 text, got {value!r}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise CodecError(f"bad base64: {e}") from e


def _obj(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise CodecError(f"expected an object, got {value!r}")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_entry(e: Entry) -> JSON:
    return {"index": e.index, "term": e.term, "kind": int(e.kind), "data": _b64(e.data)}


def decode_entry(value: object) -> Entry:
    d = _obj(value)
    try:
        kind = EntryKind(_int(d["kind"]))
        return Entry(_int(d["index"]), _int(d["term"]), kind, _bytes(d["data"]))
    except KeyError as e:
        raise CodecError(f"entry lacks {e}") from e
    except ValueError as e:
        raise CodecError(str(e)) from e


def encode_snapshot(s: Snapshot) -> JSON:
    out: JSON = {"index": s.index, "term": s.term, "data": _b64(s.data)}
    if s.membership is not None:
        out["membership"] = s.membership.to_json()
    return out


def decode_snapshot(value: object) -> Snapshot:
    d = _obj(value)
    try:
        membership = Membership.from_json(d["membership"]) if "membership" in d else None
        return Snapshot(_int(d["index"]), _int(d["term"]), _bytes(d["data"]), membership)
    except KeyError as e:
        raise CodecError(f"snapshot lacks {e}") from e
    except MembershipError as e:
        raise CodecError(str(e)) from e


def _decode_entries(value: object) -> tuple[Entry, ...]:
    if not isinstance(value, list):
        raise CodecError(f"expected a list of entries, got {value!r}")
    return tuple(decode_entry(v) for v in value)


def _encode_value(value: object) -> object:
    if isinstance(value, tuple):
        return [encode_entry(e) for e in value]
    if isinstance(value, Snapshot):
        return encode_snapshot(value)
    return value


_DECODERS: dict[object, Callable[[object], object]] = {
    int: _int,
    bool: _bool,
    tuple[Entry, ...]: _decode_entries,
    Snapshot: decode_snapshot,
}

_SCHEMA: dict[str, tuple[type[Message], list[tuple[str, Callable[[object], object], bool]]]] = {}
for _cls in MESSAGE_TYPES:
    _hints = typing.get_type_hints(_cls)
    _SCHEMA[_name(_cls)] = (
        _cls,
        [
            (f.name, _DECODERS[_hints[f.name]], f.default is dataclasses.MISSING)
            for f in dataclasses.fields(_cls)
        ],
    )
_NAMES = {cls: name for name, (cls, _) in _SCHEMA.items()}
_KEYS = {cls: [(name, _key(name)) for name, _, _ in fields] for cls, fields in _SCHEMA.values()}


def encode_message(m: Message) -> JSON:
    """The JSON-compatible form of ``m``."""
    out: JSON = {"v": VERSION, "type": _NAMES[type(m)]}
    for name, key in _KEYS[type(m)]:
        out[key] = _encode_value(getattr(m, name))
    return out


def decode_message(value: object) -> Message:
    """Parses the output of :func:`encode_message`; raises CodecError on any defect."""
    d = _obj(value)
    if d.get("v") != VERSION:
        raise CodecError(f"unsupported message version {d.get('v')!r}")
    kind = d.get("type")
    if not isinstance(kind, str) or kind not in _SCHEMA:
        raise CodecError(f"unknown message type {kind!r}")
    cls, fields = _SCHEMA[kind]
    kwargs: dict[str, object] = {}
    for name, decode, required in fields:
        key = _key(name)
        if key in d:
            kwargs[name] = decode(d[key])
        elif required:
            raise CodecError(f"{kind} lacks {key!r}")
    return cls(**kwargs)  # type: ignore[arg-type]


def message_to_bytes(m: Message) -> bytes:
    return json.dumps(encode_message(m), separators=(",", ":")).encode()


def message_from_bytes(data: bytes) -> Message:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CodecError(f"not JSON: {e}") from e
    return decode_message(value)
