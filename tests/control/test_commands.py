"""Registry commands: their codec, replay of the untyped form, and refusal codes."""

from __future__ import annotations

import json

import pytest

from control.api import REFUSAL_STATUS
from control.commands import (
    COMMAND_TYPES,
    DEFAULT_POOL,
    ActivateBackend,
    AddBackend,
    Command,
    CommandCodecError,
    CreatePool,
    DrainBackend,
    Health,
    Noop,
    RemoveBackend,
    Rollback,
    SetHealth,
    Stamp,
    Stamped,
    command_from_bytes,
    command_to_bytes,
)
from control.registry import Applied, FailureCode, Refused, Registry

EVERY_COMMAND: list[Command] = [
    AddBackend("p", "memcached://10.0.0.1:11211"),
    RemoveBackend("p", "a"),
    DrainBackend("p", "a"),
    ActivateBackend("p", "a"),
    SetHealth("p", "a", Health.DOWN, {"proxy-1": "timeout", "n": [1, 2]}),
    Rollback("p", 7),
    CreatePool("p", "md5", 3),
    Noop(),
]


def test_the_list_covers_every_command_type() -> None:
    assert {type(c) for c in EVERY_COMMAND} == set(COMMAND_TYPES)


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("stamp", [Stamp(12.5, "api", "why not", "r-1"), Stamp(0.0, "detector")])
def test_every_command_round_trips(command: Command, stamp: Stamp) -> None:
    stamped = Stamped(command, stamp)
    data = command_to_bytes(stamped)
    assert json.loads(data)["v"] == 1
    assert command_from_bytes(data) == stamped


def v1(op: str, **fields: object) -> bytes:
    return json.dumps({"v": 1, "op": op, "time": 1.0, "who": "t", **fields}).encode()


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (v1("add_backend", pool="p"), "'url'"),
        (v1("add_backend", pool="p", url=5), "'url'"),
        (v1("rollback", pool="p", epoch="3"), "'epoch'"),
        (v1("rollback", pool="p", epoch=True), "'epoch'"),
        (v1("set_health", pool="p", backend="a", health="sideways"), "'health'"),
        (v1("create_pool", pool="p", replicas=2.0), "'replicas'"),
        (v1("drain_backend", pool=None, backend="a"), "'pool'"),
        (v1("noop", time="noon"), "'time'"),
        (v1("noop", time=float("nan")), "'time'"),
        (v1("noop", request_id=7), "'request_id'"),
        (json.dumps({"v": 1, "op": "noop", "time": 1.0}).encode(), "'who'"),
        (v1("explode"), "'op'"),
        (json.dumps({"v": 2, "op": "noop"}).encode(), "version 2"),
        (b"[1, 2]", "JSON object"),
        (b"{not json", "undecodable"),
    ],
)
def test_a_malformed_command_is_rejected_naming_the_field(data: bytes, named: str) -> None:
    with pytest.raises(CommandCodecError, match=named):
        command_from_bytes(data)
    refused = Registry().apply(1, data)
    assert isinstance(refused, Refused)
    assert refused.code is FailureCode.BAD_COMMAND
    assert named in refused.message


def test_an_entry_in_the_untyped_form_replays() -> None:
    # As the API and the detector wrote them before commands were typed.
    old = [
        {"op": "create_pool", "pool": "sessions", "hash": "md5", "replicas": 1,
         "request_id": "r1", "who": "api", "time": 1.5},
        {"op": "add_backend", "pool": "sessions", "url": "memcached://10.0.0.1:11211",
         "request_id": "r2", "who": "api", "time": 2.5, "why": "grow"},
        {"op": "set_health", "pool": "sessions", "backend": "10.0.0.1", "health": "down",
         "who": "detector", "why": "quorum", "evidence": {"p": "refused"}, "time": 3.5},
        {"op": "noop"},
    ]  # fmt: skip
    registry = Registry()
    outcomes = [registry.apply(i, json.dumps(c).encode()) for i, c in enumerate(old, 1)]
    assert outcomes == [Applied(1), Applied(2), Applied(3), Applied()]
    assert command_from_bytes(json.dumps(old[3]).encode()) == Stamped(Noop(), Stamp(0.0, "unknown"))
    event = registry.events[-1]
    assert (event.kind, event.who, event.why, event.time, event.evidence) == (
        "mark_down", "detector", "quorum", 3.5, {"p": "refused"},
    )  # fmt: skip
    assert registry.pools["sessions"].backends["10.0.0.1"].health is Health.DOWN
    untyped_pool = command_from_bytes(b'{"op": "drain_backend", "backend": "a"}').command
    assert untyped_pool == DrainBackend(DEFAULT_POOL, "a")


def test_a_format_1_snapshot_with_http_statuses_loads() -> None:
    registry = Registry()
    registry.apply(1, v1("add_backend", pool="nope", url="memcached://h:1", request_id="bad"))
    registry.apply(2, v1("add_backend", pool="default", url="memcached://h:1", request_id="ok"))
    raw = json.loads(registry.snapshot())
    assert raw["format"] == 2
    assert "status" not in json.dumps(raw["results"])
    raw["format"] = 1
    for _, result in raw["results"]:
        if "error" in result:
            result["status"] = 404
    restored = Registry.from_snapshot(json.dumps(raw).encode())
    again = restored.apply(3, v1("add_backend", pool="nope", url="memcached://h:1",
                                 request_id="bad"))  # fmt: skip
    assert again == Refused(FailureCode.UNKNOWN_POOL, "no pool named 'nope'")
    assert restored.apply(4, v1("noop", request_id="ok")) == Applied(2)
    assert json.loads(restored.snapshot())["format"] == 2


def test_restore_replaces_state_in_place() -> None:
    source = Registry()
    source.apply(1, v1("add_backend", pool="default", url="memcached://h:1"))
    target = Registry()
    target.apply(1, v1("create_pool", pool="other"))
    target.restore(source.snapshot())
    assert set(target.pools) == {DEFAULT_POOL}
    assert target.snapshot() == source.snapshot()


def test_every_refusal_code_has_one_http_status() -> None:
    assert set(REFUSAL_STATUS) == set(FailureCode)
    assert REFUSAL_STATUS == {
        FailureCode.BAD_COMMAND: 400,
        FailureCode.BAD_BACKEND: 400,
        FailureCode.BAD_POOL: 400,
        FailureCode.BAD_HASH: 400,
        FailureCode.UNKNOWN_POOL: 404,
        FailureCode.UNKNOWN_BACKEND: 404,
        FailureCode.UNKNOWN_EPOCH: 404,
        FailureCode.DUPLICATE_BACKEND: 409,
        FailureCode.DUPLICATE_POOL: 409,
    }
