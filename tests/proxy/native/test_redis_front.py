"""The redis front with real clients: redis-py (sync and asyncio) and redis-cli, through a
real `ringleader proxy --redis-listen` over three real redis-servers. Where a key really
is, is read from each backend directly."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from tests.proxy.native.redis_support import RedisFleet, redis_fleet
from tests.support.control_cluster import parse_metric
from tests.support.fleet import exchange
from tests.support.servers import LOOPBACK, ProcessGroup, wait_until

KEYS = [f"key-{i:03d}-{i * 7919 % 1000}" for i in range(60)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFleet]:
    procs = ProcessGroup(tmp_path_factory.mktemp("redis-front"))
    try:
        yield redis_fleet(procs, "--hash-tag", "{}")
    finally:
        procs.cleanup()


def raw(port: int, payload: bytes, until: bytes = b"\r\n") -> bytes:
    """Sends `payload` on a new connection and reads until the reply ends with `until` or
    the proxy closes the connection."""
    return exchange(port, payload, lambda reply: reply.endswith(until))


def test_strings_hashes_lists_sets_sorted_sets_and_hyperloglog(fleet: RedisFleet) -> None:
    r = fleet.client()
    assert r.set("s", "v") is True
    assert r.get("s") == b"v"
    assert r.set("s", "w", nx=True) is None
    assert r.set("n", 10, ex=100) is True
    assert 0 < r.ttl("n") <= 100
    assert r.incr("n") == 11
    assert r.decrby("n", 2) == 9
    assert r.incrbyfloat("n", 0.5) == 9.5
    assert r.getset("s", "x") == b"v"
    assert r.getex("s", ex=50) == b"x"
    assert 0 < r.ttl("s") <= 50
    assert r.getdel("s") == b"x"
    assert r.get("s") is None
    assert r.append("a", "12") == 2
    assert r.strlen("a") == 2
    assert r.hset("h", mapping={"f1": "1", "f2": "2"}) == 2
    assert r.hgetall("h") == {b"f1": b"1", b"f2": b"2"}
    assert r.hincrby("h", "f1", 5) == 6
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lrange("l", 0, -1) == [b"a", b"b", b"c"]
    assert r.lpop("l") == b"a"
    assert r.sadd("set", "x", "y") == 2
    assert r.smembers("set") == {b"x", b"y"}
    assert r.zadd("z", {"m1": 1.0, "m2": 2.0}) == 2
    assert r.zrange("z", 0, -1, withscores=True) == [(b"m1", 1.0), (b"m2", 2.0)]
    assert r.pfadd("hll", "a", "b", "c") == 1
    assert r.pfcount("hll") == 3
    # A backend's own error comes back as it is.
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.incr("h")


def test_mget_mset_and_counting_commands_across_three_backends(fleet: RedisFleet) -> None:
    r = fleet.client()
    values = {key: f"value of {key}" for key in KEYS}
    assert r.mset(values) is True
    holders = {key: fleet.holder(key) for key in KEYS}
    assert all(len(h) == 1 for h in holders.values()), holders
    assert {h[0] for h in holders.values()} == {"rd1", "rd2", "rd3"}
    asked = [*KEYS[:30], "absent-1", *KEYS[30:], "absent-2"]
    expected = [values.get(k, "").encode() or None for k in asked]
    assert r.mget(asked) == expected
    assert r.exists(*KEYS, "absent-1") == len(KEYS)
    assert r.touch(*KEYS[:10]) == 10
    assert r.delete(*KEYS[:20], "absent-1") == 20
    assert r.unlink(*KEYS[20:]) == len(KEYS) - 20
    assert r.mget(KEYS[:5]) == [None] * 5
    assert all(fleet.holder(key) == [] for key in KEYS)


def test_pipelines_answer_in_order(fleet: RedisFleet) -> None:
    r = fleet.client()
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"p{i}", i)
        pipe.get(f"p{i}")
        pipe.incr(f"p{i}")
    pipe.mget([f"p{i}" for i in range(300)])
    results = pipe.execute()
    for i in range(300):
        assert results[3 * i : 3 * i + 3] == [True, str(i).encode(), i + 1]
    assert results[-1] == [str(i + 1).encode() for i in range(300)]


def test_asyncio_client_pipelines_and_concurrency(fleet: RedisFleet) -> None:
    async def main() -> None:
        r = redis.asyncio.Redis(host=LOOPBACK, port=fleet.port, socket_timeout=5)
        try:
            async with r.pipeline(transaction=False) as pipe:
                for i in range(100):
                    pipe.set(f"a{i}", f"v{i}")
                pipe.mget([f"a{i}" for i in range(100)])
                results = await pipe.execute()
            assert results[:100] == [True] * 100
            assert results[100] == [f"v{i}".encode() for i in range(100)]
            got = await asyncio.gather(*(r.get(f"a{i}") for i in range(100)))
            assert got == [f"v{i}".encode() for i in range(100)]
            assert await r.mset({f"b{i}": i for i in range(50)}) is True
            assert await r.delete(*(f"b{i}" for i in range(50))) == 50
        finally:
            await r.aclose()

    asyncio.run(main())


def test_hash_tags_keep_related_keys_on_one_backend(fleet: RedisFleet) -> None:
    r = fleet.client()
    for user in range(10):
        keys = [f"{{user{user}}}:{field}" for field in ("name", "mail", "cart")]
        assert r.mset(dict.fromkeys(keys, "x")) is True
        assert len({fleet.holder(k)[0] for k in keys}) == 1, keys
        # Keys of one tag may be used together where redis needs them on one server.
        script = "return redis.call('GET', KEYS[1]) .. redis.call('GET', KEYS[2])"
        assert r.eval(script, 2, keys[0], keys[1]) == b"xx"
        assert r.sinter(keys[0] + "s", keys[1] + "s") == set()
    # Keys without a common tag usually are not together: EVAL says why it cannot run.
    r.mset(dict.fromkeys(KEYS, "1"))
    apart = next(k for k in KEYS if fleet.holder(k) != fleet.holder(KEYS[0]))
    with pytest.raises(redis.ResponseError, match="map to different backends"):
        r.eval("return 1", 2, KEYS[0], apart)


def test_redis_cli(fleet: RedisFleet) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is installed with redis-server (Debian redis-tools)"
    base = [cli, "-h", LOOPBACK, "-p", str(fleet.port)]

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([*base, *args], input=stdin, capture_output=True, text=True,
                              timeout=10, check=True)  # fmt: skip
        return done.stdout

    assert run("PING") == "PONG\n"
    assert run("SET", "cli-key", "hello world") == "OK\n"
    assert run("GET", "cli-key") == "hello world\n"
    assert run("MGET", "cli-key", "cli-absent") == "hello world\n\n"
    assert "# Proxy" in run("INFO")
    # Commands from stdin, one per line, as scripts feed it.
    assert run(stdin="SET cli-2 v2\nGET cli-2\nDEL cli-key cli-2\n") == "OK\nv2\n2\n"
    assert "unsupported command 'KEYS'" in run("KEYS", "*")


def test_connection_and_tooling_commands(fleet: RedisFleet) -> None:
    r = fleet.client()
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.execute_command("SELECT", "0") is True
    with pytest.raises(redis.ResponseError, match="only SELECT 0"):
        r.execute_command("SELECT", "1")
    hello = r.execute_command("HELLO", "2")
    assert hello[hello.index(b"proto") + 1] == 2
    with pytest.raises(redis.ResponseError, match="NOPROTO"):
        r.execute_command("HELLO", "3")
    assert r.command_count() > 100
    info = r.info("proxy")
    assert info["front"] == "redis"
    assert info["ring_backends"] == 3
    assert "redis_version" in r.info()
    with pytest.raises(redis.ResponseError, match="unsupported command 'FLUSHALL'"):
        r.execute_command("FLUSHALL")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        r.execute_command("GET")
    # redis-py connecting with RESP3 is refused, and falls back to nothing: an error.
    resp3 = fleet.client(protocol=3)
    with pytest.raises(redis.ResponseError):
        resp3.ping()
    assert raw(fleet.port, b"QUIT\r\n", until=b"\r\n") == b"+OK\r\n"


def test_malformed_input_gets_an_error_and_the_stream_goes_on_where_it_can(
    fleet: RedisFleet,
) -> None:
    # Whole commands that are wrong: an error each, and the connection goes on.
    reply = raw(fleet.port, b"NOSUCH a b\r\n*1\r\n$4\r\nPING\r\n", until=b"+PONG\r\n")
    assert reply == b"-ERR unsupported command 'NOSUCH'\r\n+PONG\r\n"
    reply = raw(fleet.port, b"*1\r\n$3\r\nGET\r\n*1\r\n$4\r\nPING\r\n", until=b"+PONG\r\n")
    assert reply.endswith(b"+PONG\r\n")
    assert reply.startswith(b"-ERR wrong number")
    # Bytes that are not RESP: an error, then the proxy closes (it cannot resynchronise).
    for garbage in (b"*2\r\n$x\r\n", b"*1\r\n:5\r\n", b"*1\r\n$3\r\nGET\r\n!!!\r\n"):
        reply = raw(fleet.port, garbage, until=b"\x00never")
        assert re.search(rb"-ERR Protocol error[^\r\n]*\r\n$", reply), (garbage, reply)
    assert fleet.client().ping() is True


def test_metrics_count_commands_latency_and_connections(fleet: RedisFleet) -> None:
    r = fleet.client()
    before = parse_metric(fleet.metrics(), "ringleader_proxy_commands_total",
                          {"front": "redis", "command": "get", "result": "ok"})  # fmt: skip
    for i in range(20):
        r.get(f"m{i}")
    with pytest.raises(redis.ResponseError):
        r.execute_command("NOSUCHCOMMAND")

    def counted() -> bool:
        text = fleet.metrics()
        gets = parse_metric(text, "ringleader_proxy_commands_total",
                            {"front": "redis", "command": "get", "result": "ok"})  # fmt: skip
        refused = {"front": "redis", "command": "other", "result": "client_error"}
        other = parse_metric(text, "ringleader_proxy_commands_total", refused)
        # Each worker reports on its own schedule: the counters can already hold an
        # earlier test's commands from one worker before this client's worker reports.
        open_now = parse_metric(text, "ringleader_proxy_connections", {"front": "redis"})
        return gets >= before + 20 and other >= 1 and open_now >= 1

    wait_until(counted, 10, "the commands and this connection in /metrics")
    text = fleet.metrics()
    assert "nosuchcommand" not in text.lower()  # unknown names are not label values
    assert parse_metric(text, "ringleader_proxy_command_duration_seconds_count",
                        {"front": "redis"}) >= 20  # fmt: skip
    assert 'le="0.0001"' in text  # sub-millisecond buckets


def test_status_shows_the_fronts(fleet: RedisFleet) -> None:
    status = fleet.status()
    assert status["fronts"] == {"redis-listen": f"{LOOPBACK}:{fleet.port}"}
    assert status["listen"] is None
