"""The redis front's command table (proxy/native/redis_commands.py)."""

from __future__ import annotations

import pytest

from proxy.native.redis_commands import COMMANDS, Kind


def test_required_commands_are_routed_as_the_issue_says() -> None:
    singles = ("get set getset getex getdel incr incrbyfloat expire ttl persist hset hgetall "
               "lpush lrange sadd smembers zadd zrange pfadd")  # fmt: skip
    for name in singles.split():
        assert COMMANDS[name].kind is Kind.SINGLE, name
    assert COMMANDS["mget"].kind is Kind.MGET
    assert COMMANDS["mset"].kind is Kind.MSET
    for name in ("del", "unlink", "exists", "touch"):
        assert COMMANDS[name].kind is Kind.COUNT, name
    for name in ("eval", "evalsha"):
        assert COMMANDS[name].kind is Kind.SCRIPT, name
    for name in ("ping", "echo", "quit", "select", "command", "info", "hello", "auth"):
        assert COMMANDS[name].kind is Kind.LOCAL, name
    assert "flushall" not in COMMANDS
    assert "keys" not in COMMANDS


def test_writes_are_marked_for_the_failover_ttl_cap() -> None:
    assert COMMANDS["set"].writes
    assert COMMANDS["hset"].writes
    assert COMMANDS["mset"].writes
    assert not COMMANDS["get"].writes
    assert not COMMANDS["hgetall"].writes


def test_key_positions() -> None:
    script = [b"EVAL", b"return 1", b"2", b"k1", b"k2", b"arg"]
    assert COMMANDS["eval"].keys(script) == [b"k1", b"k2"]
    assert COMMANDS["zunionstore"].keys([b"ZUNIONSTORE", b"d", b"2", b"a", b"b"]) == [b"a", b"b"]
    assert COMMANDS["smove"].keys([b"SMOVE", b"a", b"b", b"m"]) == [b"a", b"b"]
    assert COMMANDS["sinter"].keys([b"SINTER", b"a", b"b", b"c"]) == [b"a", b"b", b"c"]
    with pytest.raises(ValueError, match="greater than number of args"):
        COMMANDS["eval"].keys([b"EVAL", b"s", b"3", b"k1"])
    with pytest.raises(ValueError, match="invalid literal"):
        COMMANDS["eval"].keys([b"EVAL", b"s", b"many", b"k1"])
