"""`GET /v1/pools/{pool}/proxies` against a real 3-node cluster: the leader's detector view of
the reporting proxies, served by any node without a token; and `--wait` reading it, with
reports posted by the test standing in for proxies (tests/e2e/test_cli_wait.py has real
ones)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.control.test_ops_cli import ok, one_line_error, ringleader
from tests.support.control_cluster import ControlCluster, backend_url, module_cluster
from tests.support.servers import wait_until

PROXIES = "/v1/pools/default/proxies"
REPORTS = "/v1/pools/default/reports"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    yield from module_cluster(tmp_path_factory, "proxies")


def listed(cluster: ControlCluster, node: int, proxy: str, pool: str = "default"
           ) -> dict[str, Any] | None:  # fmt: skip
    body = httpx.get(f"{cluster.url(node)}/v1/pools/{pool}/proxies", timeout=5).json()
    return next((p for p in body["proxies"] if p["proxy"] == proxy), None)


def new_pool(cluster: ControlCluster) -> str:
    pool = f"wait-{uuid.uuid4().hex[:8]}"
    ok(ringleader("pool", "create", pool, "--control", cluster.control_arg, cluster=cluster))
    return pool


def keep_reporting(cluster: ControlCluster, pool: str, proxy: str, epoch: int) -> None:
    """Posts a report until the leader lists it (a new leader forgets older ones)."""
    report = {"proxy": proxy, "epoch": epoch, "backends": {}}
    leader = cluster.wait_leader()

    def listed_by_the_leader() -> bool:
        sent = httpx.post(f"{cluster.url(leader)}/v1/pools/{pool}/reports", json=report,
                          headers=cluster.headers(), timeout=5)  # fmt: skip
        assert sent.status_code == 204, sent.text
        return listed(cluster, leader, proxy, pool) is not None

    wait_until(listed_by_the_leader, 15, f"{proxy} in the leader's view")


def test_any_node_serves_the_leaders_view_of_a_report(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.followers(leader)[0]
    proxy = f"host/{uuid.uuid4().hex[:8]}"
    report = {"proxy": proxy, "interval": 1.0, "epoch": 41,
              "backends": {"a": {"state": "up"}, "b": {"state": "down"},
                           "c": {"state": "unknown"}}}  # fmt: skip

    def seen_by_the_leader() -> bool:
        # A new leader forgets reports once it notices it leads: send until one sticks.
        sent = httpx.post(cluster.url(follower) + REPORTS, json=report, timeout=5,
                          headers=cluster.headers())  # fmt: skip
        assert sent.status_code == 204, sent.text
        return listed(cluster, leader, proxy) is not None

    wait_until(seen_by_the_leader, 15, "the report in the leader's view")
    for node in (1, 2, 3):
        response = httpx.get(cluster.url(node) + PROXIES, timeout=5)  # no token
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["pool"], body["window_seconds"]) == ("default", 6.0)
        entry = next(p for p in body["proxies"] if p["proxy"] == proxy)
        assert set(entry) == {"proxy", "last_seen", "age_seconds", "epoch", "verdicts"}
        assert entry["epoch"] == 41
        assert entry["verdicts"] == {"a": "up", "b": "down"}
        assert 0 <= entry["age_seconds"] < 10
        assert abs(entry["last_seen"] - (time.time() - entry["age_seconds"])) < 5


def test_an_unknown_pool_is_a_404(cluster: ControlCluster) -> None:
    cluster.wait_leader()
    response = httpx.get(cluster.url(1) + "/v1/pools/nope/proxies", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_pool"


def test_the_view_is_read_only(cluster: ControlCluster) -> None:
    response = httpx.post(cluster.url(1) + PROXIES, json={}, headers=cluster.headers(), timeout=5)
    assert response.status_code == 405


def test_with_no_reporting_proxy_wait_says_so_and_succeeds(cluster: ControlCluster) -> None:
    pool = new_pool(cluster)
    out = ok(ringleader("backend", "add", backend_url("solo", 21501), "--pool", pool, "--wait",
                        "--control", cluster.control_arg, cluster=cluster))  # fmt: skip
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"add {backend_url('solo', 21501)}: pool {pool} at epoch ")
    assert lines[1].endswith(": no proxy reported in the last 6 s; nothing to wait for")


def test_wait_fails_naming_a_proxy_behind(cluster: ControlCluster) -> None:
    pool = new_pool(cluster)
    keep_reporting(cluster, pool, "host/behind:1", 0)
    result = ringleader("backend", "add", backend_url("late", 21502), "--pool", pool, "--wait",
                        "--wait-timeout", "0.5", "--control", cluster.control_arg,
                        cluster=cluster)  # fmt: skip
    line = one_line_error(result, "1 proxies after 0.5 s; behind: host/behind:1 at epoch 0")
    assert line.startswith("ringleader backend: error: epoch "), line
    assert "0/1 proxies" in line


def test_wait_counts_a_proxy_on_a_later_epoch_as_arrived(cluster: ControlCluster) -> None:
    pool = new_pool(cluster)
    keep_reporting(cluster, pool, "host/ahead:1", 10**9)
    out = ok(ringleader("backend", "add", backend_url("early", 21503), "--pool", pool, "--wait",
                        "--control", cluster.control_arg, cluster=cluster))  # fmt: skip
    assert re.search(r"^epoch \d+: 1/1 proxies in \d+\.\d\d s$", out, re.MULTILINE), out


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_bad_wait_timeout_is_a_one_line_usage_error(value: str) -> None:
    result = ringleader("rollback", "3", "--wait", "--wait-timeout", value)
    assert result.returncode == 2
    one_line_error(result, f"--wait-timeout: expected a number of seconds > 0, got {value!r}")
