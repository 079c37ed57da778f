"""`ringleader proxy --memcached-listen` as a process, over three real memcached servers:
pymemcache unchanged, raw meta commands and pipelining, each limit flag, metrics, kill -9
of a backend under traffic, the agreed ring change with a control plane, and placement
identical to nutcracker's."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from tests.support.control_cluster import parse_metric
from tests.support.fleet import FAILOVER_TTL, Fleet, FleetProxy, exchange, memcached_meta
from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    Proxy,
    ServerProcess,
    free_port,
    memcached_url,
    wait_until,
)

NAMES = ("mc1", "mc2", "mc3")
MAX_VALUE = 2000
MAX_REQUEST = 8192
MAX_KEYS = 50
MAX_PIPELINE = 8


@dataclass
class MemcachedProxy:
    backends: dict[str, ServerProcess]
    proxy: Proxy
    port: int

    def client(self, **options: object) -> Client:
        return Client((LOOPBACK, self.port), timeout=5, **options)  # type: ignore[arg-type]

    def holders(self, key: str) -> list[str]:
        return [n for n, s in self.backends.items() if memcached_meta(s.port, key)[0] is not None]

    def metric(self, name: str, labels: dict[str, str]) -> float:
        return parse_metric(httpx.get(self.proxy.admin_url + "/metrics", timeout=5).text, name,
                            labels)  # fmt: skip


def start_front(procs: ProcessGroup, backends: dict[str, str], *extra: str) -> tuple[Proxy, int]:
    """A proxy serving only the memcached front; `backends` maps names to URLs."""
    port, admin = free_port(), free_port()
    args = ["proxy", "--memcached-listen", f"{LOOPBACK}:{port}", "--admin", f"{LOOPBACK}:{admin}"]
    for url in backends.values():
        args += ["--backend", url]
    proc = procs.ringleader([*args, *extra], port, name="proxy")
    proxy = Proxy(proc, f"memcached://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{admin}")
    # Workers start slowly on a loaded machine (each imports the whole CLI): be generous.
    proxy.wait_ready(timeout=60)
    wait_front(port)
    return proxy, port


def wait_front(port: int) -> None:
    """The supervisor binds the socket before any worker serves it: wait for an answer."""

    def answers() -> bool:
        try:
            return exchange(port, b"version\r\n", lambda d: d.endswith(b"\r\n")).startswith(
                b"VERSION"
            )
        except OSError:
            return False

    wait_until(answers, 30, f"the memcached front on port {port}")


def memcached_proxy(procs: ProcessGroup, *extra: str) -> MemcachedProxy:
    servers = {name: procs.memcached() for name in NAMES}
    urls = {name: memcached_url(s, name=name) for name, s in servers.items()}
    proxy, port = start_front(procs, urls, *extra)
    return MemcachedProxy(servers, proxy, port)


LIMIT_FLAGS = ("--max-value-bytes", str(MAX_VALUE), "--native-max-request-bytes",
               str(MAX_REQUEST), "--native-max-keys", str(MAX_KEYS), "--native-max-pipeline",
               str(MAX_PIPELINE), "--native-max-connections", "3", "--request-timeout",
               "0.5")  # fmt: skip


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemcachedProxy]:
    procs = ProcessGroup(tmp_path_factory.mktemp("memcached-front"))
    try:
        yield memcached_proxy(procs, *LIMIT_FLAGS)
    finally:
        procs.cleanup()


def spread(prefix: str, count: int) -> list[str]:
    """Keys that spread over the ring (fnv1a_64 keeps keys differing in a counter close)."""
    return [f"{prefix}:{hashlib.md5(str(i).encode()).hexdigest()[:10]}" for i in range(count)]


# -- pymemcache, unchanged --------------------------------------------------------------------


def test_pymemcache_many_keys_land_on_every_backend_and_come_back(front: MemcachedProxy) -> None:
    client = front.client()
    keys = spread("many", 45)
    values = {k: k.encode() * 3 for k in keys}
    assert client.set_many(values, noreply=False) == []
    placed = {k: front.holders(k) for k in keys}
    assert all(len(v) == 1 for v in placed.values()), placed
    assert {v[0] for v in placed.values()} == set(NAMES)
    assert client.get_many([*keys, "absent"]) == values
    # noreply, then a reply ordered after it: the writes are done by then.
    assert client.set_many(dict.fromkeys(keys, b"2"), noreply=True) == []
    assert client.version().startswith(b"ringleader-")
    assert all(memcached_meta(front.backends[placed[k][0]].port, k)[0] == b"2" for k in keys)
    assert client.delete_many(keys, noreply=False)
    assert client.get_many(keys) == {}


def test_pymemcache_cas_incr_decr_touch(front: MemcachedProxy) -> None:
    client = front.client(default_noreply=False)
    assert client.set("counter", b"5", expire=100)
    value, token = client.gets("counter")
    assert value == b"5"
    assert client.cas("counter", b"6", token) is True
    assert client.cas("counter", b"7", token) is False
    assert client.incr("counter", 10) == 16
    assert client.decr("counter", 1) == 15
    assert client.incr("no-such", 1) is None
    assert client.touch("counter", 0) is True
    assert client.add("counter", b"x") is False
    gat = exchange(front.port, b"gat 77 counter\r\n", lambda d: d.endswith(b"END\r\n"))
    assert gat == b"VALUE counter 0 2\r\n15\r\nEND\r\n"
    holder = front.holders("counter")[0]
    _, ttl = memcached_meta(front.backends[holder].port, "counter")
    assert ttl is not None
    assert 70 <= ttl <= 77


# -- raw: meta, pipelining, malformed input ---------------------------------------------------


def test_meta_commands_and_mn_over_a_pipelined_connection(front: MemcachedProxy) -> None:
    keys = spread("meta", 12)
    payload = b"".join(b"ms %s 1 T60\r\nx\r\n" % k.encode() for k in keys)
    payload += b"".join(b"mg %s v k q\r\nmg %s-miss v q\r\n" % (k.encode(), k.encode())
                        for k in keys)  # fmt: skip
    payload += b"md %s q\r\nmg %s v\r\nmn\r\n" % (keys[0].encode(), keys[0].encode())
    reply = exchange(front.port, payload, lambda d: d.endswith(b"MN\r\n"))
    expected = b"HD\r\n" * len(keys)
    expected += b"".join(b"VA 1 k%s\r\nx\r\n" % k.encode() for k in keys)
    expected += b"EN\r\nMN\r\n"
    assert reply == expected


def test_malformed_input_gets_errors_and_only_a_lost_stream_closes(front: MemcachedProxy) -> None:
    reply = exchange(front.port, b"gets\r\nfrobnicate x\r\nincr k abc\r\nset k 0 0 1\r\nx\r\n"
                     b"set k 0 0 z\r\nversion\r\n", lambda _d: False)  # fmt: skip
    assert reply.split(b"\r\n") == [
        b"CLIENT_ERROR no key given",
        b"CLIENT_ERROR unknown command 'frobnicate'",
        b"CLIENT_ERROR invalid numeric delta argument",
        b"STORED",
        b"CLIENT_ERROR bad data chunk",
        b"",
    ]


# -- the limits, each with its flag ---------------------------------------------------------------


def test_value_and_request_size_limits(front: MemcachedProxy) -> None:
    client = front.client(default_noreply=False)
    assert client.set("fits", b"v" * MAX_VALUE)
    with pytest.raises(Exception, match="value is 2001 bytes; the limit is 2000"):
        client.set("too-big", b"v" * (MAX_VALUE + 1))
    assert client.get("fits") == b"v" * MAX_VALUE  # the connection is still in step
    long_line = b"get " + b" ".join(b"k" * 200 for _ in range(45)) + b"\r\n"
    assert len(long_line) > MAX_REQUEST
    assert exchange(front.port, long_line, lambda _d: False) == b"CLIENT_ERROR line too long\r\n"


def test_keys_per_multi_get_limit(front: MemcachedProxy) -> None:
    client = front.client()
    assert client.get_many(spread("limit", MAX_KEYS)) == {}
    with pytest.raises(Exception, match="51 keys; the limit is 50"):
        client.get_many(spread("limit", MAX_KEYS + 1))


def test_pipeline_depth_limit_pauses_reading_without_losing_a_reply(
    front: MemcachedProxy,
) -> None:
    count = 40 * MAX_PIPELINE
    keys = spread("pipe", count)
    payload = b"".join(b"set %s 0 0 1 noreply\r\nx\r\nget %s\r\n" % (k.encode(), k.encode())
                       for k in keys) + b"mn\r\n"  # fmt: skip
    reply = exchange(front.port, payload, lambda d: d.endswith(b"MN\r\n"))
    assert reply == b"".join(b"VALUE %s 0 1\r\nx\r\nEND\r\n" % k.encode() for k in keys) + (
        b"MN\r\n"
    )


def test_connections_per_worker_limit(front: MemcachedProxy) -> None:
    held = [socket.create_connection((LOOPBACK, front.port), timeout=5) for _ in range(3)]
    try:
        for s in held:  # each is served
            s.sendall(b"version\r\n")
            assert s.recv(100).startswith(b"VERSION")
        with socket.create_connection((LOOPBACK, front.port), timeout=5) as extra:
            assert extra.recv(100) == b"SERVER_ERROR too many connections\r\n"
    finally:
        for s in held:
            s.close()
    wait_until(lambda: exchange(front.port, b"version\r\n", lambda d: d.endswith(b"\r\n"))
               .startswith(b"VERSION"), 10, "a free connection slot")  # fmt: skip
    refused = {"front": "memcached"}
    wait_until(lambda: front.metric("ringleader_proxy_connections_refused_total", refused) >= 1,
               10, "the refusal counted")  # fmt: skip


def test_commands_are_counted_by_bounded_name_and_result(front: MemcachedProxy) -> None:
    ok = {"front": "memcached", "command": "get", "result": "ok"}
    bad = {"front": "memcached", "command": "other", "result": "client_error"}
    # The module's earlier tests counted commands too: wait for this test's own.
    commands = "ringleader_proxy_commands_total"
    ok_before, bad_before = front.metric(commands, ok), front.metric(commands, bad)
    client = front.client(default_noreply=False)
    client.set("counted", b"1")
    client.get("counted")
    exchange(front.port, b"bogus-command\r\n", lambda d: d.endswith(b"\r\n"))

    def counted() -> bool:
        return front.metric(commands, ok) > ok_before and front.metric(commands, bad) > bad_before

    wait_until(counted, 10, "this test's commands in the counters")
    text = httpx.get(front.proxy.admin_url + "/metrics", timeout=5).text
    assert 'command="bogus-command"' not in text
    assert 'ringleader_proxy_connections{front="memcached"}' in text


# -- failures ---------------------------------------------------------------------------------


@dataclass
class Traffic:
    """A pymemcache client doing set/get in a loop; every outcome is recorded."""

    port: int
    keys: list[str]
    misses: int = 0
    server_errors: list[str] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = Client((LOOPBACK, self.port), timeout=5, default_noreply=False)
        while not self.stop.is_set():
            for key in self.keys:
                try:
                    if client.get(key) is None:
                        self.misses += 1
                    client.set(key, key.encode())
                except MemcacheServerError as exc:
                    self.server_errors.append(str(exc))
                except Exception as exc:  # a timeout or a closed connection: a hang
                    self.failures.append(exc)
                    return


def test_kill_9_a_backend_under_traffic_gives_misses_and_errors_never_a_hang(
    procs: ProcessGroup,
) -> None:
    # A killed backend's errors come from its reset and refused connections, at once, not
    # from the request timeout. A short one only failed the other backends' requests when a
    # loaded machine held a worker back that long. 3 s stays below the client's 5 s, so a
    # request the proxy never answered would still show.
    target = memcached_proxy(procs, "--workers", "2", "--request-timeout", "3")
    keys = spread("traffic", 30)
    target.client().set_many({k: b"x" for k in keys}, noreply=False)
    owner = {k: target.holders(k)[0] for k in keys}
    assert "mc2" in owner.values()
    traffic = [Traffic(target.port, keys) for _ in range(4)]
    threads = [threading.Thread(target=t.run, daemon=True) for t in traffic]
    for thread in threads:
        thread.start()
    target.backends["mc2"].kill()
    killed_at = time.monotonic()
    wait_until(lambda: all(len(t.server_errors) >= 5 and t.misses >= 5 for t in traffic), 20,
               "misses and server errors")  # fmt: skip
    assert time.monotonic() - killed_at < 20
    for t in traffic:
        t.stop.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.failures for t in traffic), [t.failures for t in traffic]
    assert {e for t in traffic for e in t.server_errors} == {"b'backend mc2 unavailable'"}
    survivors = [k for k in keys if owner[k] != "mc2"]
    assert target.client().get_many(keys) == {k: k.encode() for k in survivors}


@pytest.fixture(scope="module")
def control_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("memcached-front-fleet"), pools={"default": "memcached"},
              proxies_per_pool=1)  # fmt: skip
    try:
        yield f.start()
    finally:
        f.close()


def test_the_agreed_ring_change_reaches_the_memcached_front(control_fleet: Fleet) -> None:
    fleet = control_fleet
    listen, admin, port = free_port(), free_port(), free_port()
    argv = [*fleet.proxy_argv("default", listen, admin), "--memcached-listen",
            f"{LOOPBACK}:{port}"]  # fmt: skip
    proc = fleet.procs.ringleader(argv, listen, name="memcached-front")
    proxy = FleetProxy("memcached-front", "default", proc, f"http://{LOOPBACK}:{listen}",
                       f"http://{LOOPBACK}:{admin}", argv)  # fmt: skip
    fleet.wait_proxy_ready(proxy, timeout=60)
    wait_front(port)
    fleet.proxies["default"].append(proxy)
    epoch = fleet.wait_converged("default", lambda m: len(m) == 3, "three backends")
    client = Client((LOOPBACK, port), timeout=5, default_noreply=False)
    keys = spread("ring", 40)
    client.set_many(dict.fromkeys(keys, b"v"))
    port_of = {b.name: b.port for b in fleet.backends["default"]}
    on_victim = [k for k in keys if memcached_meta(port_of["mc2"], k)[0] is not None]
    assert on_victim
    fleet.backend("default", "mc2").process.kill()
    # Until the control plane agrees: a miss and an error naming the backend, no hang.
    assert client.get(on_victim[0]) is None
    with pytest.raises(MemcacheServerError, match="backend mc2 unavailable"):
        client.set(on_victim[0], b"new")
    fleet.wait_converged("default", lambda m: "mc2" not in m, "mc2 marked down", timeout=30,
                         after=epoch)  # fmt: skip
    # The owner is down: the write lands elsewhere, with the failover TTL cap.
    assert client.set(on_victim[0], b"new", expire=0)
    assert client.get(on_victim[0]) == b"new"
    holders = [n for n in ("mc1", "mc3") if memcached_meta(port_of[n], on_victim[0])[0]]
    assert len(holders) == 1
    _, ttl = memcached_meta(port_of[holders[0]], on_victim[0])
    assert ttl is not None
    assert 0 < ttl <= FAILOVER_TTL
    # Keys whose owner is up keep the TTL they were given.
    kept = next(k for k in keys if k not in on_victim)
    assert client.set(kept, b"v2", expire=0)
    kept_on = next(n for n in ("mc1", "mc3") if memcached_meta(port_of[n], kept)[0])
    assert memcached_meta(port_of[kept_on], kept)[1] == -1


# -- nutcracker placement -----------------------------------------------------------------------

KEY_COUNT = 5000
WEIGHTS = {"mc1": 1, "mc2": 2, "mc3": 3}


def _held(port: int, keys: list[bytes]) -> set[bytes]:
    """The keys among `keys` that the memcached on `port` holds: quiet meta gets answer
    only hits, and `mn` marks the end."""
    payload = b"".join(b"mg %s k q\r\n" % k for k in keys) + b"mn\r\n"
    reply = exchange(port, payload, lambda d: d.endswith(b"MN\r\n"))
    return {line[4:] for line in reply.split(b"\r\n") if line.startswith(b"HD k")}


def _placement(port: int, keys: list[bytes], servers: dict[str, ServerProcess]
               ) -> dict[bytes, str]:  # fmt: skip
    """Writes every key through the proxy on `port`; key -> the backend holding it."""
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        payload = b"".join(b"set %s 0 0 1\r\n1\r\n" % k for k in batch)
        want = len(batch)
        reply = exchange(port, payload, lambda d, want=want: d.count(b"\r\n") >= want)
        assert reply == b"STORED\r\n" * len(batch), reply[:200]
    placed: dict[bytes, str] = {}
    for name, server in servers.items():
        for key in _held(server.port, keys):
            assert key not in placed, f"{key!r} is on two backends"
            placed[key] = name
        exchange(server.port, b"flush_all\r\n", lambda d: d.endswith(b"\r\n"))
    return placed


def test_nutcracker_and_the_memcached_front_place_every_key_alike(procs: ProcessGroup) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    servers = {name: procs.memcached() for name in WEIGHTS}
    nutcracker = procs.nutcracker(
        [f"{LOOPBACK}:{s.port}:{WEIGHTS[n]} {n}" for n, s in servers.items()], hash_tag="{}"
    ).port
    urls = {n: memcached_url(s, name=n, weight=WEIGHTS[n]) for n, s in servers.items()}
    _, front = start_front(procs, urls, "--hash-tag", "{}")
    # Plain keys, tagged keys, empty tags (hashed whole) and bytes >= 0x80.
    keys: list[bytes] = []
    for i in range(KEY_COUNT):
        word = f"{rng.getrandbits(40):x}"
        shapes = [f"k:{word}", f"{{user{i % 97}}}:{word}", f"x{{}}{word}", f"\u00e9t\u00e9:{word}",
                  f"a{{{word}}}b{{c}}"]  # fmt: skip
        keys.append(rng.choice(shapes).encode())
    keys = list(dict.fromkeys(keys))
    by_nutcracker = _placement(nutcracker, keys, servers)
    by_ringleader = _placement(front, keys, servers)
    assert len(by_nutcracker) == len(keys)
    assert set(by_nutcracker.values()) == set(WEIGHTS)
    moved = [k for k in keys if by_nutcracker[k] != by_ringleader.get(k)]
    assert not moved, f"{len(moved)} keys placed differently, e.g. {moved[:5]}"
