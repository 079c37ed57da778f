"""The KV API and the admin port of a real `ringleader proxy` process."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    Proxy,
    ServerProcess,
    free_port,
    memcached_url,
    redis_url,
    wait_until,
)

MIB = 1024 * 1024


@dataclass
class KVEnv:
    mc1: ServerProcess
    mc2: ServerProcess
    proxy: Proxy  # mc1 + mc2, default limits
    small: Proxy  # mc1 only, --max-value-bytes 1000
    dead: Proxy  # one memcached URL where nothing listens
    client: httpx.Client


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVEnv]:
    group = ProcessGroup(tmp_path_factory.mktemp("kv"))
    try:
        mc1, mc2 = group.memcached(), group.memcached()
        proxy = group.proxy([memcached_url(mc1), memcached_url(mc2)])
        small = group.proxy([memcached_url(mc1)], "--max-value-bytes", "1000")
        dead = group.proxy([f"memcached://{LOOPBACK}:{free_port()}?name=nowhere"])
        with httpx.Client(timeout=10) as client:
            yield KVEnv(mc1, mc2, proxy, small, dead, client)
    finally:
        group.cleanup()


def kv(proxy: Proxy, key: bytes | str) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return f"{proxy.url}/v1/kv/{quote(raw, safe='')}"


def memcached_get(port: int, key: bytes) -> bytes | None:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"get " + key + b"\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            reply += sock.recv(1 << 20)
    if reply == b"END\r\n":
        return None
    header, _, rest = reply.partition(b"\r\n")
    return rest[: int(header.split()[3])]


def assert_json_error(response: httpx.Response, status: int, error: str, says: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert says in body["message"], body["message"]


# Reads and writes


def test_put_then_get_returns_the_bytes_with_backend_and_epoch_headers(env: KVEnv) -> None:
    put = env.client.put(kv(env.proxy, "greeting"), content=b"hello")
    assert put.status_code == 204
    assert put.content == b""
    got = env.client.get(kv(env.proxy, "greeting"))
    assert got.status_code == 200
    assert got.content == b"hello"
    assert got.headers["content-type"] == "application/octet-stream"
    backend = got.headers["x-ringleader-backend"]
    assert backend == put.headers["x-ringleader-backend"]
    assert backend in {f"{LOOPBACK}:{env.mc1.port}", f"{LOOPBACK}:{env.mc2.port}"}
    assert got.headers["x-ringleader-epoch"] == put.headers["x-ringleader-epoch"] == "0"


def test_the_key_is_stored_byte_for_byte_on_the_backend_it_names(env: KVEnv) -> None:
    key = b"caf\xc3\xa9:\x80\xff~"
    put = env.client.put(kv(env.proxy, key), content=b"direct")
    assert put.status_code == 204
    port = int(put.headers["x-ringleader-backend"].rsplit(":", 1)[1])
    assert memcached_get(port, key) == b"direct"
    other = env.mc2.port if port == env.mc1.port else env.mc1.port
    assert memcached_get(other, key) is None


def test_get_of_a_missing_key_is_404_json_with_headers(env: KVEnv) -> None:
    got = env.client.get(kv(env.proxy, "never-written"))
    assert_json_error(got, 404, "not_found", "no such key")
    assert "x-ringleader-backend" in got.headers
    assert "x-ringleader-miss" not in got.headers  # a plain miss, not a failure


def test_delete_is_204_and_the_key_is_gone(env: KVEnv) -> None:
    env.client.put(kv(env.proxy, "doomed"), content=b"x")
    deleted = env.client.delete(kv(env.proxy, "doomed"))
    assert deleted.status_code == 204
    assert deleted.headers["x-ringleader-epoch"] == "0"
    assert env.client.get(kv(env.proxy, "doomed")).status_code == 404
    assert env.client.delete(kv(env.proxy, "doomed")).status_code == 204  # idempotent


def test_put_overwrites(env: KVEnv) -> None:
    env.client.put(kv(env.proxy, "over"), content=b"one")
    env.client.put(kv(env.proxy, "over"), content=b"two")
    assert env.client.get(kv(env.proxy, "over")).content == b"two"


def test_put_with_ttl_expires(env: KVEnv) -> None:
    assert env.client.put(kv(env.proxy, "brief") + "?ttl=1", content=b"x").status_code == 204
    assert env.client.get(kv(env.proxy, "brief")).status_code == 200
    wait_until(lambda: env.client.get(kv(env.proxy, "brief")).status_code == 404, 4.0,
               "a ttl=1 value to expire")  # fmt: skip


def test_ttl_zero_means_no_expiry(env: KVEnv) -> None:
    assert env.client.put(kv(env.proxy, "forever") + "?ttl=0", content=b"x").status_code == 204
    assert env.client.get(kv(env.proxy, "forever")).status_code == 200


@pytest.mark.parametrize(
    "value",
    [bytes(range(256)), b"", b"\r\nEND\r\n", bytes(range(256)) * 4000],
    ids=["all-256-bytes", "empty", "protocol-markers", "1000-KiB"],
)
def test_binary_values_round_trip_byte_for_byte(env: KVEnv, value: bytes) -> None:
    key = f"binary-{len(value)}-{value[:3].hex()}"
    assert env.client.put(kv(env.proxy, key), content=value).status_code == 204
    got = env.client.get(kv(env.proxy, key))
    assert got.status_code == 200
    assert got.headers["content-length"] == str(len(value))
    assert got.content == value


# Invalid requests


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("x" * 251, "key is 251 bytes; the limit is 250"),
        ("two%20words", "space or a control byte"),
        ("tab%09", "space or a control byte"),
        ("nul%00", "space or a control byte"),
        ("del%7F", "space or a control byte"),
        ("", "key is empty"),
    ],
    ids=["251-bytes", "space", "tab", "nul", "del", "empty"],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_invalid_keys_get_400_json_naming_the_problem(
    env: KVEnv, path: str, says: str, method: str
) -> None:
    response = env.client.request(method, f"{env.proxy.url}/v1/kv/{path}", content=b"v")
    assert_json_error(response, 400, "invalid_key", says)


def test_a_250_byte_key_is_fine(env: KVEnv) -> None:
    assert env.client.put(kv(env.proxy, "k" * 250), content=b"v").status_code == 204
    assert env.client.get(kv(env.proxy, "k" * 250)).content == b"v"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("ttl=-1", "whole number of seconds"),
        ("ttl=abc", "whole number of seconds"),
        ("ttl=1.5", "whole number of seconds"),
        ("ttl=", "whole number of seconds"),
        ("ttl=%D9%A3", "whole number of seconds"),  # Arabic-Indic digit three
        ("ttl=99999999999999999999", "maximum"),
        ("ttl=1&ttl=2", "more than once"),
        ("ttl=1&colour=red", "unknown query parameter 'colour'"),
        ("ttl", "malformed"),
    ],
)
def test_bad_ttl_gets_400_json(env: KVEnv, query: str, says: str) -> None:
    response = env.client.put(kv(env.proxy, "ttl-key") + "?" + query, content=b"v")
    assert_json_error(response, 400, "invalid_ttl", says)
    assert env.client.get(kv(env.proxy, "ttl-key")).status_code == 404  # nothing written


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b"z" * min(size, total - sent)
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_value_over_the_default_1_mib_limit_gets_413_json(env: KVEnv, transfer: str) -> None:
    size = MIB + 1
    body = b"z" * size if transfer == "content-length" else _chunks(size)
    response = env.client.put(kv(env.proxy, f"huge-{transfer}"), content=body)
    assert_json_error(response, 413, "value_too_large", f"{MIB}-byte limit")
    assert env.client.get(kv(env.proxy, f"huge-{transfer}")).status_code == 404


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_configured_max_value_bytes_is_enforced(env: KVEnv, transfer: str) -> None:
    def body(size: int) -> bytes | Iterator[bytes]:
        return b"z" * size if transfer == "content-length" else _chunks(size, 300)

    over = env.client.put(kv(env.small, f"lim-{transfer}"), content=body(1001))
    assert_json_error(over, 413, "value_too_large", "1000-byte limit")
    assert env.client.put(kv(env.small, f"lim-{transfer}"), content=body(1000)).status_code == 204


def test_value_within_our_limit_but_over_memcacheds_is_413_not_503(env: KVEnv) -> None:
    # memcached's item limit (1 MiB) includes its own overhead, so exactly 1 MiB is too big
    # for it although it is within the proxy's limit.
    response = env.client.put(kv(env.proxy, "at-limit"), content=b"z" * MIB)
    assert_json_error(response, 413, "value_too_large", "object too large")
    assert "x-ringleader-backend" in response.headers


@pytest.mark.parametrize("method", ["POST", "PATCH", "HEAD", "OPTIONS"])
def test_unknown_method_is_405_with_allow(env: KVEnv, method: str) -> None:
    response = env.client.request(method, kv(env.proxy, "k"))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT, DELETE"
    if method != "HEAD":
        assert response.json()["error"] == "method_not_allowed"


def test_paths_outside_the_kv_api_are_404_json(env: KVEnv) -> None:
    assert_json_error(env.client.get(f"{env.proxy.url}/elsewhere"), 404, "not_found", "/v1/kv/")


# An unreachable backend (docs/invariants.md, invariant 1: a miss on reads, a clear error on writes)


def test_get_from_an_unreachable_backend_is_a_404_miss(env: KVEnv) -> None:
    response = env.client.get(kv(env.dead, "k"))
    assert response.status_code == 404
    assert response.headers["x-ringleader-miss"] == "backend-unavailable"
    assert response.headers["x-ringleader-backend"] == "nowhere"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_writes_to_an_unreachable_backend_are_503_json_naming_it(env: KVEnv, method: str) -> None:
    response = env.client.request(method, kv(env.dead, "k"), content=b"v")
    assert_json_error(response, 503, "backend_unavailable", "backend nowhere")
    assert "nothing was written" in response.json()["message"]
    assert response.headers["x-ringleader-backend"] == "nowhere"


# Admin port


def _metrics(admin_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"{admin_url}/metrics", timeout=5).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_admin_health_readiness_and_metrics(env: KVEnv) -> None:
    assert httpx.get(f"{env.proxy.admin_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{env.proxy.admin_url}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    env.client.get(kv(env.proxy, "metrics-probe"))
    families = ("ringleader_proxy_request_duration_seconds_bucket",
                "ringleader_proxy_responses_total", "ringleader_backend_up")  # fmt: skip
    metrics: dict[str, list[tuple[dict[str, str], float]]] = {}

    def listed() -> bool:
        # The request's series reach /metrics with the worker's next report, not at once.
        metrics.update(_metrics(env.proxy.admin_url))
        return all(family in metrics for family in families)

    wait_until(listed, 5, f"{', '.join(families)} in /metrics")
    assert metrics["ringleader_proxy_ring_epoch"] == [({}, 0.0)]
    assert metrics["ringleader_proxy_ring_backends"] == [({}, 2.0)]
    assert metrics["ringleader_proxy_workers"] == [({}, 1.0)]


def test_status_shows_ring_settings_and_backends(env: KVEnv) -> None:
    def status() -> dict[str, Any]:
        return dict(httpx.get(f"{env.proxy.admin_url}/status").json())

    def all_up() -> bool:
        return all(b["state"] == "up" for b in status()["backends"])

    wait_until(all_up, 5.0, "both backends probed up")
    body = status()
    assert body["distribution"] == "ketama"
    assert body["hash"] == "fnv1a_64"
    assert body["epoch"] == 0
    assert body["source"] == "static"
    names = [b["name"] for b in body["backends"]]
    assert names == [f"{LOOPBACK}:{env.mc1.port}", f"{LOOPBACK}:{env.mc2.port}"]
    json.dumps(body)  # plain JSON all the way down


def test_status_reports_a_killed_backend_down(procs: ProcessGroup) -> None:
    mc = procs.memcached()
    proxy = procs.proxy([memcached_url(mc, name="victim")], "--health-interval", "0.2")

    def state() -> str:
        backends = httpx.get(f"{proxy.admin_url}/status").json()["backends"]
        return str(backends[0]["state"])

    wait_until(lambda: state() == "up", 5.0, "backend probed up")
    mc.kill()
    wait_until(lambda: state() == "down", 5.0, "backend reported down")
    backend = httpx.get(f"{proxy.admin_url}/status").json()["backends"][0]
    assert backend["name"] == "victim"
    assert backend["last_error"]
    assert backend["consecutive_failures"] >= 1
    up = {labels["backend"]: v for labels, v in _metrics(proxy.admin_url)["ringleader_backend_up"]}
    assert up == {"victim": 0.0}


def test_a_stopped_backend_never_stalls_requests_to_another(procs: ProcessGroup) -> None:
    sick, healthy = procs.memcached(), procs.memcached()
    proxy = procs.proxy([memcached_url(sick, name="sick"), memcached_url(healthy, name="ok")])
    with httpx.Client(timeout=10) as client:
        owners: dict[str, str] = {}
        i = 0
        while len(owners) < 2:
            key = f"probe-{i}"
            owners.setdefault(client.put(kv(proxy, key), content=b"v").headers[
                "x-ringleader-backend"], key)  # fmt: skip
            i += 1
        sick.stop()
        try:
            with ThreadPoolExecutor(8) as pool:
                stuck = [pool.submit(httpx.get, kv(proxy, owners["sick"]), timeout=10)
                         for _ in range(8)]  # fmt: skip
                latencies = []
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    response = client.get(kv(proxy, owners["ok"]))
                    latencies.append(time.monotonic() - started)
                    assert response.status_code == 200
                sick_responses = [f.result() for f in stuck]
        finally:
            sick.cont()
    # A stall would last the request timeout (0.5 s); the bound leaves room for a busy box.
    assert max(latencies) < 0.25, f"slowest healthy request took {max(latencies):.3f}s"
    for response in sick_responses:
        assert response.status_code == 404
        assert response.headers["x-ringleader-miss"] in {"backend-timeout", "backend-unavailable"}


def test_redis_backend_serves_the_kv_api_in_its_database(procs: ProcessGroup) -> None:
    redis = procs.redis()
    proxy = procs.proxy([redis_url(redis, db=3, name="r3")])
    with httpx.Client(timeout=5) as client:
        assert client.put(kv(proxy, "rk") + "?ttl=60", content=b"rv").status_code == 204
        got = client.get(kv(proxy, "rk"))
        assert (got.status_code, got.content, got.headers["x-ringleader-backend"]) == (
            200, b"rv", "r3")  # fmt: skip
    with socket.create_connection((LOOPBACK, redis.port), timeout=5) as sock:
        sock.sendall(b"EXISTS rk\r\nSELECT 3\r\nTTL rk\r\n")
        reply = b""
        while reply.count(b"\r\n") < 3:
            reply += sock.recv(4096)
    exists_db0, selected, ttl = reply.split(b"\r\n")[:3]
    assert (exists_db0, selected) == (b":0", b"+OK")
    assert 0 < int(ttl[1:]) <= 60
