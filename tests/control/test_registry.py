"""The registry state machine: pure, deterministic, one command at a time."""

from __future__ import annotations

import json
from typing import Any

import pytest

from control.api import REFUSAL_STATUS
from control.commands import DEFAULT_POOL, Health
from control.registry import AdminState, FailureCode, Registry


class Log:
    """Feeds commands to a registry at increasing log indexes, as the Raft driver does.

    They are in the untyped form logs held before commands were typed (format version 0),
    which must still replay; tests/control/test_commands.py covers the typed form.
    """

    def __init__(self) -> None:
        self.registry = Registry()
        self.index = 0

    def apply(self, **command: Any) -> dict[str, Any]:
        self.index += 1
        command.setdefault("time", 1000.0 + self.index)
        command.setdefault("who", "test")
        return self.registry.apply(self.index, json.dumps(command).encode()).to_json()


def members(registry: Registry, pool: str = DEFAULT_POOL) -> list[str]:
    return [b.name for b in registry.pools[pool].members()]


def test_default_pool_exists_from_first_boot() -> None:
    registry = Registry()
    assert registry.pools[DEFAULT_POOL].epoch == 0
    assert members(registry) == []


def test_epoch_is_the_log_index_of_the_last_ring_change() -> None:
    log = Log()
    log.apply(op="add_backend", url="memcached://10.0.0.1:11211")
    assert log.registry.pools[DEFAULT_POOL].epoch == 1
    log.apply(op="noop")
    log.apply(op="add_backend", url="memcached://10.0.0.2:11211")
    assert log.registry.pools[DEFAULT_POOL].epoch == 3
    assert members(log.registry) == ["10.0.0.1", "10.0.0.2"]


def test_refused_commands_change_nothing_and_say_why() -> None:
    log = Log()
    log.apply(op="add_backend", url="memcached://10.0.0.1:11211")
    before = log.registry.snapshot()
    cases = {
        "unknown_pool": dict(op="add_backend", pool="nope", url="memcached://h:1"),
        "duplicate_backend": dict(op="add_backend", url="redis://10.0.0.1:11211?name=10.0.0.1"),
        "bad_backend": dict(op="add_backend", url="memcached://h:1?weight=-3"),
        "unknown_backend": dict(op="drain_backend", backend="ghost"),
        "bad_command": dict(op="explode"),
        "unknown_epoch": dict(op="rollback", epoch=99),
    }
    for code, command in cases.items():
        result = log.apply(**command)
        assert result["error"] == code, (code, result)
        assert 400 <= REFUSAL_STATUS[FailureCode(result["error"])] < 500
        assert result["message"]
    after = json.loads(log.registry.snapshot())
    after["applied_index"] = json.loads(before)["applied_index"]
    assert after["pools"] == json.loads(before)["pools"]


def test_retried_request_id_applies_once() -> None:
    log = Log()
    first = log.apply(op="add_backend", url="memcached://10.0.0.1:11211", request_id="r1")
    log.apply(op="remove_backend", backend="10.0.0.1")
    again = log.apply(op="add_backend", url="memcached://10.0.0.1:11211", request_id="r1")
    assert again == first
    assert members(log.registry) == []


def test_drain_and_mark_down_leave_the_ring_with_an_explained_event() -> None:
    log = Log()
    for i in range(3):
        log.apply(op="add_backend", url=f"memcached://10.0.0.{i}:11211")
    log.apply(op="drain_backend", backend="10.0.0.0", why="maintenance")
    evidence = {"proxy-a": "timeout", "proxy-b": "refused"}
    log.apply(op="set_health", backend="10.0.0.1", health="down", why="quorum",
              who="detector", evidence=evidence)  # fmt: skip
    pool = log.registry.pools[DEFAULT_POOL]
    assert members(log.registry) == ["10.0.0.2"]
    assert pool.backends["10.0.0.0"].admin is AdminState.DRAINING
    assert pool.backends["10.0.0.1"].health is Health.DOWN
    last = log.registry.events[-1]
    assert (last.kind, last.backend, last.who, last.evidence) == (
        "mark_down",
        "10.0.0.1",
        "detector",
        evidence,
    )
    assert last.epoch == pool.epoch == log.index


def test_rollback_restores_an_earlier_membership_as_a_new_epoch() -> None:
    log = Log()
    log.apply(op="add_backend", url="memcached://10.0.0.1:11211")
    log.apply(op="add_backend", url="memcached://10.0.0.2:11211")
    good_epoch = log.registry.pools[DEFAULT_POOL].epoch
    log.apply(op="set_health", backend="10.0.0.1", health="down")
    log.apply(op="add_backend", url="memcached://10.0.0.3:11211")
    result = log.apply(op="rollback", epoch=good_epoch, why="bad ejection")
    assert result["epoch"] == log.index > good_epoch
    assert members(log.registry) == ["10.0.0.1", "10.0.0.2"]
    assert log.registry.pools[DEFAULT_POOL].backends["10.0.0.3"].admin is AdminState.DRAINING


def test_snapshot_restore_round_trips_everything() -> None:
    log = Log()
    log.apply(op="create_pool", pool="sessions", hash="md5")
    log.apply(op="add_backend", pool="sessions", url="redis://10.0.0.9:6379/2?weight=3")
    log.apply(op="add_backend", url="memcached://10.0.0.1:11211", request_id="x")
    log.apply(op="set_health", backend="10.0.0.1", health="down", evidence=[1, 2])
    restored = Registry.from_snapshot(log.registry.snapshot())
    assert restored.snapshot() == log.registry.snapshot()
    assert restored.pools["sessions"].hash == "md5"


def test_applying_an_index_twice_is_a_bug_not_a_retry() -> None:
    log = Log()
    log.apply(op="noop")
    with pytest.raises(ValueError, match="applied twice"):
        log.registry.apply(1, b'{"op": "noop"}')


def test_a_change_that_leaves_ring_membership_alone_keeps_the_epoch() -> None:
    log = Log()
    log.apply(op="add_backend", url="memcached://10.0.0.1:11211")
    log.apply(op="add_backend", url="memcached://10.0.0.2:11211")
    log.apply(op="set_health", backend="10.0.0.2", health="down")
    epoch = log.registry.pools[DEFAULT_POOL].epoch
    # Draining a backend that is already out of the ring changes nothing proxies route with.
    log.apply(op="drain_backend", backend="10.0.0.2", why="replace disk")
    assert log.registry.pools[DEFAULT_POOL].epoch == epoch
    assert log.registry.events[-1].kind == "drain"
    # Marking it up while drained keeps it out of the ring too.
    log.apply(op="set_health", backend="10.0.0.2", health="up")
    assert log.registry.pools[DEFAULT_POOL].epoch == epoch
    log.apply(op="activate_backend", backend="10.0.0.2")
    assert log.registry.pools[DEFAULT_POOL].epoch == log.index
    assert members(log.registry) == ["10.0.0.1", "10.0.0.2"]
