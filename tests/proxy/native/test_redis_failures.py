"""A backend killed under client traffic: redis clients get error replies naming it, never
a hung connection; with a control plane, the agreed ring change reaches the redis front
and writes that land elsewhere get the failover TTL cap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from tests.proxy.native.redis_support import RedisFleet, redis_fleet
from tests.support.control_cluster import parse_metric
from tests.support.fleet import FAILOVER_TTL, Fleet, FleetProxy, redis_ttl
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, wait_until


@dataclass
class Traffic:
    """Clients doing SET/GET in a loop; every outcome is recorded, hangs included."""

    port: int
    keys: list[str]
    errors: list[str] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    ok_after: dict[str, int] = field(default_factory=dict)
    since: float = float("inf")
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=10, retry=None)
        while not self.stop.is_set():
            for key in self.keys:
                try:
                    client.set(key, key)
                    assert client.get(key) == key.encode()
                    if time.monotonic() > self.since:
                        self.ok_after[key] = self.ok_after.get(key, 0) + 1
                except redis.ResponseError as exc:
                    self.errors.append(str(exc))
                except (redis.TimeoutError, redis.ConnectionError, AssertionError) as exc:
                    self.failures.append(exc)
                    return


# A killed backend's errors come from its reset and refused connections, at once, not from
# this timeout. A short one only failed the other backends' requests whenever a loaded
# machine held a worker back that long, giving errors naming them. It stays below the
# clients' socket timeout, so a request the proxy never answered would still show.
REQUEST_TIMEOUT = "3"


@pytest.fixture
def static_fleet(procs: ProcessGroup) -> RedisFleet:
    return redis_fleet(procs, "--workers", "2", "--request-timeout", REQUEST_TIMEOUT)


def test_kill_9_a_backend_under_traffic(static_fleet: RedisFleet) -> None:
    fleet = static_fleet
    setup = fleet.client()
    keys = [f"traffic-{i}" for i in range(60)]
    setup.mset(dict.fromkeys(keys, "x"))
    owner = {key: fleet.holder(key)[0] for key in keys}
    traffic = [Traffic(fleet.port, keys) for _ in range(4)]
    threads = [threading.Thread(target=t.run, daemon=True) for t in traffic]
    for thread in threads:
        thread.start()
    fleet.backends["rd2"].kill()
    for t in traffic:
        t.since = time.monotonic()
    wait_until(lambda: all(len(t.errors) >= 5 for t in traffic), 20, "error replies")
    survivors = [k for k in keys if owner[k] != "rd2"]
    wait_until(lambda: all(t.ok_after.get(k, 0) >= 2 for t in traffic for k in survivors), 20,
               "traffic to the other backends")  # fmt: skip
    # A pipeline across all backends: every reply comes back, errors in place.
    pipe = fleet.client().pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    results = pipe.execute(raise_on_error=False)
    for key, result in zip(keys, results, strict=True):
        if owner[key] == "rd2":
            assert isinstance(result, redis.ResponseError)
            assert "backend rd2" in str(result)
        else:
            assert result == key.encode()
    for t in traffic:
        t.stop.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.failures for t in traffic), [t.failures for t in traffic]
    errors = {e for t in traffic for e in t.errors}
    assert all(e.startswith("backend rd2 unavailable") for e in errors), errors
    with pytest.raises(redis.ResponseError, match="backend rd2"):
        fleet.client().mget(keys)
    wait_until(lambda: parse_metric(fleet.metrics(), "ringleader_backend_errors_total",
                                    {"backend": "rd2", "op": "redis"}) > 0, 10,
               "backend errors counted")  # fmt: skip


@pytest.fixture(scope="module")
def control_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("redis-front-fleet"), pools={"redis": "redis"})
    try:
        yield f.start()
    finally:
        f.close()


def _start_native_proxy(fleet: Fleet) -> tuple[FleetProxy, int]:
    listen, admin, port = free_port(), free_port(), free_port()
    argv = [*fleet.proxy_argv("redis", listen, admin), "--redis-listen", f"{LOOPBACK}:{port}"]
    proc = fleet.procs.ringleader(argv, listen, name="redis-front")
    proxy = FleetProxy("redis-front", "redis", proc, f"http://{LOOPBACK}:{listen}",
                       f"http://{LOOPBACK}:{admin}", argv)  # fmt: skip
    fleet.wait_proxy_ready(proxy)
    fleet.proxies["redis"].append(proxy)
    return proxy, port


def test_the_agreed_ring_change_reaches_the_redis_front(control_fleet: Fleet) -> None:
    fleet = control_fleet
    _, port = _start_native_proxy(fleet)
    epoch = fleet.wait_converged("redis", lambda m: len(m) == 3, "three backends")
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=5)
    assert client.info("proxy")["ring_epoch"] == epoch
    keys = [f"ring-{i}" for i in range(40)]
    client.mset(dict.fromkeys(keys, "v"))
    victim = fleet.backend("redis", "rd2")
    on_victim = [k for k in keys if victim.process.alive() and _held_by(fleet, k) == "rd2"]
    assert on_victim
    victim.process.kill()
    # Until the control plane agrees, keys of rd2 get an error naming it, without hanging.
    with pytest.raises(redis.ResponseError, match="backend rd2"):
        client.get(on_victim[0])
    after = fleet.wait_converged("redis", lambda m: "rd2" not in m, "rd2 marked down",
                                 timeout=30, after=epoch)  # fmt: skip
    assert client.info("proxy")["ring_epoch"] == after
    # The owner is down: the write lands on another backend with the failover TTL cap.
    assert client.set(on_victim[0], "new") is True
    assert client.get(on_victim[0]) == b"new"
    holder = _held_by(fleet, on_victim[0])
    assert holder in ("rd1", "rd3")
    ttl = redis_ttl(fleet.backend("redis", holder).port, on_victim[0])
    assert 0 < ttl <= FAILOVER_TTL
    # Keys of the live backends are not capped.
    kept = next(k for k in keys if k not in on_victim)
    assert client.set(kept, "v2") is True
    assert redis_ttl(fleet.backend("redis", _held_by(fleet, kept)).port, kept) == -1


def _held_by(fleet: Fleet, key: str) -> str | None:
    for backend in fleet.backends["redis"]:
        if not backend.process.alive():
            continue
        if redis.Redis(host=LOOPBACK, port=backend.port).exists(key):
            return backend.name
    return None
