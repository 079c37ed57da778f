"""The memcached front in-process over real memcached servers: routing, fan-out and merge,
failures, the failover TTL cap, quiet and noreply, pipelining and the limits.

The front runs on its own event loop in a thread, as in a worker; the tests talk to it
through real sockets (raw, and pymemcache).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client

from proxy.metrics import ProxyMetrics
from proxy.native.front import Flusher, FrontLimits
from proxy.native.memcached import MemcachedFront
from proxy.router import RingState, Router
from ringleader.backend_url import BackendSpec, parse_backend_url
from ringleader.backends import ClientSettings
from ringleader.ring import KetamaRing
from tests.support.fleet import exchange, memcached_meta
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, memcached_url

FAST = ClientSettings(connect_timeout=0.3, request_timeout=0.5, reconnect_backoff_min=0.05,
                      reconnect_backoff_max=0.2)  # fmt: skip
LIMITS = FrontLimits(max_request_bytes=4096, max_keys=50, max_pipeline=64, max_connections=8)
FAILOVER_TTL = 30
MAX_VALUE = 2000


class FrontThread:
    """A `MemcachedFront` serving a loopback socket from an event loop in a thread."""

    def __init__(self, specs: list[BackendSpec], limits: FrontLimits = LIMITS) -> None:
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.metrics = ProxyMetrics()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.router: Router = self.call(self._start(specs, limits))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self, specs: list[BackendSpec], limits: FrontLimits) -> Router:
        router = Router(FAST, RingState(1, "fnv1a_64", tuple(specs)), FAILOVER_TTL,
                        self.metrics.failover_writes)  # fmt: skip
        self.front = MemcachedFront(router, self.metrics, limits, FAST, MAX_VALUE, Flusher())
        await self.front.serve(self.sock)
        return router

    def install(self, state: RingState) -> None:
        async def install() -> None:
            assert self.router.install(state)

        self.call(install())

    def counter(self, command: str, result: str) -> float:
        async def read() -> float:
            snap = self.metrics.set.snapshot()["ringleader_proxy_commands_total"]
            return snap.get(("memcached", command, result), [0.0])[0]

        return float(self.call(read()))

    def counter_refused(self) -> float:
        async def read() -> float:
            snap = self.metrics.set.snapshot()["ringleader_proxy_connections_refused_total"]
            return snap.get(("memcached",), [0.0])[0]

        return float(self.call(read()))

    def close(self) -> None:
        async def stop() -> None:
            self.front.close()
            await self.router.close()

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def servers(procs: ProcessGroup) -> list[ServerProcess]:
    return [procs.memcached() for _ in range(3)]


def specs_of(servers: list[ServerProcess]) -> list[BackendSpec]:
    return [parse_backend_url(memcached_url(s, name=f"mc{i + 1}")) for i, s in
            enumerate(servers)]  # fmt: skip


@pytest.fixture
def front(servers: list[ServerProcess]) -> Iterator[FrontThread]:
    thread = FrontThread(specs_of(servers))
    try:
        yield thread
    finally:
        thread.close()


def version_answered(port: int) -> bool:
    try:
        return exchange(port, b"version\r\n", ends_with(b"\r\n")).startswith(b"VERSION")
    except ConnectionError:
        return False


def ends_with(marker: bytes) -> Callable[[bytes], bool]:
    return lambda data: data.endswith(marker)


def spread(prefix: str, count: int) -> list[str]:
    """Keys that spread over the ring: fnv1a_64 places keys differing only in a trailing
    counter close together."""
    return [f"{prefix}:{hashlib.md5(str(i).encode()).hexdigest()[:10]}" for i in range(count)]


def owners(servers: list[ServerProcess], keys: list[str]) -> dict[str, int]:
    """Which server (index) each key is on, read from the servers themselves."""
    out: dict[str, int] = {}
    for key in keys:
        holders = [i for i, s in enumerate(servers) if memcached_meta(s.port, key)[0] is not None]
        assert len(holders) == 1, (key, holders)
        out[key] = holders[0]
    return out


# -- routing and merging ----------------------------------------------------------------------


def test_keys_land_where_the_ring_says_and_multi_get_merges_in_order(
    front: FrontThread, servers: list[ServerProcess]
) -> None:
    client = Client((LOOPBACK, front.port), timeout=5)
    keys = spread("user", 40)
    # pymemcache's set_many says noreply; a reply answered after them (in order) proves
    # the proxy has had every one of them acknowledged by its backend.
    assert client.set_many({k: k.encode() for k in keys}) == []
    assert client.version()
    ring = KetamaRing(tuple(specs_of(servers)), "fnv1a_64")
    names = [f"mc{i + 1}" for i in range(3)]
    placed = owners(servers, keys)
    assert {k: names[i] for k, i in placed.items()} == {k: ring.lookup(k.encode()).name
                                                         for k in keys}  # fmt: skip
    assert len(set(placed.values())) == 3
    # Raw, to see the order: values come back in request order, with one END.
    wanted = [*reversed(keys[:20]), "absent", keys[0]]
    reply = exchange(front.port, f"get {' '.join(wanted)}\r\n".encode(), ends_with(b"END\r\n"))
    lines = [line for line in reply.split(b"\r\n") if line.startswith(b"VALUE")]
    assert [line.split()[1].decode() for line in lines] == [k for k in wanted if k != "absent"]
    assert reply.count(b"END\r\n") == 1
    assert client.get_many(keys) == {k: k.encode() for k in keys}


def test_gets_cas_incr_decr_touch_gat(front: FrontThread) -> None:
    client = Client((LOOPBACK, front.port), timeout=5, default_noreply=False)
    assert client.set("n", b"10")
    value, token = client.gets("n")
    assert value == b"10"
    assert client.cas("n", b"11", token) is True
    assert client.cas("n", b"12", token) is False
    assert client.incr("n", 5) == 16
    assert client.decr("n", 20) == 0
    assert client.touch("n", 100) is True
    assert client.touch("missing", 100) is False
    reply = exchange(front.port, b"gat 50 n\r\ngats 60 n\r\n", lambda d: d.count(b"END\r\n") == 2)
    # memcached pads a decremented number to its old length.
    assert reply.startswith(b"VALUE n 0 2\r\n0 \r\nEND\r\nVALUE n 0 2 ")
    assert client.add("n", b"x") is False
    assert client.replace("n", b"r") is True
    assert client.append("n", b"s") is True
    assert client.prepend("n", b"p") is True
    assert client.get("n") == b"prs"
    assert client.delete("n") is True
    assert client.delete("n") is False
    assert front.counter("cas", "ok") == 2


def test_noreply_commands_send_nothing_back(front: FrontThread) -> None:
    payload = b"set a 0 0 1 noreply\r\nx\r\ndelete nope noreply\r\nincr a 1 noreply\r\nget a\r\n"
    reply = exchange(front.port, payload, ends_with(b"END\r\n"))
    assert reply == b"VALUE a 0 1\r\nx\r\nEND\r\n"


def test_meta_commands_route_by_key_with_flags_passed_through(front: FrontThread) -> None:
    payload = (b"ms mk 2 T90 F7\r\nhi\r\nmg mk v f t O42 k\r\nmg gone v q\r\nma ctr N0 J5 v\r\n"
               b"md mk q\r\nmg mk v\r\nmn\r\n")  # fmt: skip
    reply = exchange(front.port, payload, ends_with(b"MN\r\n"))
    lines = reply.split(b"\r\n")
    assert lines[0] == b"HD"
    assert lines[1].startswith(b"VA 2 ")
    assert set(lines[1].split()[2:]) >= {b"f7", b"O42", b"kmk"}
    assert lines[2] == b"hi"
    assert lines[3:5] == [b"VA 1", b"5"]  # ma auto-created the counter with J5
    # The quiet miss and the quiet delete show nothing; the final mg misses.
    assert lines[5:] == [b"EN", b"MN", b""]


def test_version_verbosity_quit(front: FrontThread) -> None:
    reply = exchange(front.port, b"version\r\nverbosity 1\r\nverbosity 1 noreply\r\nquit\r\n"
                     b"version\r\n", lambda _d: False)  # fmt: skip
    assert reply.startswith(b"VERSION ringleader-")
    assert reply.endswith(b"\r\nOK\r\n")  # and nothing after quit: the connection closed


def test_pipelined_requests_are_answered_in_order(front: FrontThread) -> None:
    parts = []
    expected = []
    for i in range(200):
        parts.append(b"set p%d 0 0 %d\r\n%d\r\nget p%d\r\n" % (i, len(b"%d" % i), i, i))
        expected.append(b"STORED\r\nVALUE p%d 0 %d\r\n%d\r\nEND\r\n" % (i, len(b"%d" % i), i))
    want = b"".join(expected)
    assert exchange(front.port, b"".join(parts), lambda d: len(d) >= len(want)) == want


# -- bad input and limits -----------------------------------------------------------------------


def test_a_bad_line_is_answered_and_the_connection_goes_on(front: FrontThread) -> None:
    payload = b"bogus\r\nset k x 0 1\r\nz\r\nget " + b"k" * 251 + b"\r\nversion\r\n"
    reply = exchange(front.port, payload, lambda d: b"VERSION" in d and d.endswith(b"\r\n"))
    assert reply.split(b"\r\n")[:3] == [
        b"CLIENT_ERROR unknown command 'bogus'",
        b"CLIENT_ERROR flags must be a 32-bit unsigned number",
        b"CLIENT_ERROR key is 251 bytes; the limit is 250",
    ]
    assert front.counter("other", "client_error") == 3


def test_a_lost_data_block_closes_the_connection(front: FrontThread) -> None:
    reply = exchange(front.port, b"get a\r\nset k 0 0 1\r\nxyz\r\nversion\r\n", lambda _d: False)
    assert reply == b"END\r\nCLIENT_ERROR bad data chunk\r\n"


def test_value_and_request_size_limits(front: FrontThread) -> None:
    big = b"v" * (MAX_VALUE + 1)
    reply = exchange(front.port, b"set k 0 0 %d\r\n%s\r\nversion\r\n" % (len(big), big),
                     lambda d: b"VERSION" in d)  # fmt: skip
    assert reply.startswith(b"CLIENT_ERROR value is 2001 bytes; the limit is 2000\r\n")
    line = b"get " + b" ".join(b"k%04d" % i for i in range(LIMITS.max_request_bytes // 6 + 10))
    assert exchange(front.port, line + b"\r\n", lambda _d: False) == (
        b"CLIENT_ERROR line too long\r\n"
    )


def test_keys_per_multi_get_limit(front: FrontThread) -> None:
    keys = b" ".join(b"k%d" % i for i in range(LIMITS.max_keys + 1))
    reply = exchange(front.port, b"get " + keys + b"\r\n", ends_with(b"\r\n"))
    assert reply == b"CLIENT_ERROR 51 keys; the limit is 50\r\n"


def test_pipeline_depth_limit_holds_reading_but_answers_everything(
    servers: list[ServerProcess],
) -> None:
    limits = FrontLimits(max_request_bytes=4096, max_keys=50, max_pipeline=4, max_connections=8)
    thread = FrontThread(specs_of(servers), limits)
    try:
        count = 500
        reply = exchange(thread.port, b"get a\r\n" * count + b"mn\r\n", ends_with(b"MN\r\n"))
        assert reply == b"END\r\n" * count + b"MN\r\n"
    finally:
        thread.close()


def test_connections_beyond_the_cap_are_refused(servers: list[ServerProcess]) -> None:
    limits = FrontLimits(max_request_bytes=4096, max_keys=50, max_pipeline=4, max_connections=2)
    thread = FrontThread(specs_of(servers), limits)
    try:
        held = [Client((LOOPBACK, thread.port), timeout=5) for _ in range(2)]
        for c in held:
            assert c.version()
        # The refusal is written as the connection opens; the client sends nothing, so
        # its unread bytes cannot be lost to a reset.
        with socket.create_connection((LOOPBACK, thread.port), timeout=5) as s:
            assert s.recv(100) == b"SERVER_ERROR too many connections\r\n"
        assert thread.counter_refused() == 1
        held[0].close()
        # A slot frees up once the server has seen the close: poll, don't sleep.
        deadline = time.monotonic() + 5
        while not version_answered(thread.port):
            assert time.monotonic() < deadline
    finally:
        thread.close()


# -- failures and the failover cap --------------------------------------------------------------


def test_a_down_owner_gives_misses_and_server_errors_never_a_hang(
    front: FrontThread, servers: list[ServerProcess]
) -> None:
    client = Client((LOOPBACK, front.port), timeout=5)
    ring = KetamaRing(tuple(specs_of(servers)), "fnv1a_64")
    keys = spread("k", 30)
    on_dead = [k for k in keys if ring.lookup(k.encode()).name == "mc1"]
    alive = [k for k in keys if k not in on_dead]
    client.set_many({k: b"v" for k in keys}, noreply=False)
    servers[0].kill()
    for _ in range(3):  # connected, then in backoff: both answer at once
        assert client.get(on_dead[0]) is None
        reply = exchange(front.port, b"set %s 0 0 1\r\nx\r\n" % on_dead[0].encode(),
                         ends_with(b"\r\n"))  # fmt: skip
        assert reply == b"SERVER_ERROR backend mc1 unavailable\r\n"
        reply = exchange(front.port, b"delete %s\r\nmg %s v\r\n" % (on_dead[0].encode(),
                         on_dead[0].encode()), ends_with(b"EN\r\n"))  # fmt: skip
        assert reply == b"SERVER_ERROR backend mc1 unavailable\r\nEN\r\n"
        # A multi-get spanning the dead backend still answers the live keys.
        assert client.get_many(keys) == {k: b"v" for k in alive}
    assert front.counter("set", "backend_error") >= 3


def test_writes_landing_on_a_failover_backend_get_the_capped_ttl(
    front: FrontThread, servers: list[ServerProcess]
) -> None:
    specs = specs_of(servers)
    full = KetamaRing(tuple(specs), "fnv1a_64")
    keys = spread("fo", 40)
    orphan = next(k for k in keys if full.lookup(k.encode()).name == "mc1")
    native = next(k for k in keys if full.lookup(k.encode()).name == "mc2")
    # mc1 is down: out of the ring but still an owner.
    front.install(RingState(2, "fnv1a_64", tuple(specs[1:]), tuple(specs)))
    port_of = {s.name: servers[i].port for i, s in enumerate(specs)}
    lost_to = KetamaRing(tuple(specs[1:]), "fnv1a_64").lookup(orphan.encode()).name
    payload = (b"set %s 0 0 1\r\nx\r\nset %s 0 1000 1\r\ny\r\nms %s 1\r\nz\r\n"
               % (orphan.encode(), native.encode(), orphan.encode() + b"m"))  # fmt: skip
    assert exchange(front.port, payload, ends_with(b"HD\r\n")) == b"STORED\r\nSTORED\r\nHD\r\n"
    _, ttl = memcached_meta(port_of[lost_to], orphan)
    assert ttl is not None
    assert 0 < ttl <= FAILOVER_TTL
    _, ttl = memcached_meta(port_of["mc2"], native)
    assert ttl is not None
    assert ttl > FAILOVER_TTL
    meta_owner = KetamaRing(tuple(specs[1:]), "fnv1a_64").lookup(orphan.encode() + b"m").name
    if full.lookup(orphan.encode() + b"m").name == "mc1":
        _, ttl = memcached_meta(port_of[meta_owner], orphan + "m")
        assert ttl is not None
        assert 0 < ttl <= FAILOVER_TTL


def test_with_no_backend_in_the_ring_reads_miss_and_writes_fail() -> None:
    thread = FrontThread([])
    try:
        payload = b"get a b\r\ngat 10 a\r\nmg a v\r\nset a 0 0 1\r\nx\r\nmn\r\n"
        reply = exchange(thread.port, payload, ends_with(b"MN\r\n"))
        refused = b"SERVER_ERROR the pool has no backends in its ring\r\n"
        assert reply == b"END\r\nEND\r\nEN\r\n" + refused + b"MN\r\n"
    finally:
        thread.close()
