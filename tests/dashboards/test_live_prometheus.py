"""Every dashboard query and alert rule, run by a real Prometheus against real processes.

One stack for the module (starting it is most of the cost): a 3-node control cluster,
memcached and redis registered by the Kubernetes registration Job's own script (run
twice, so its idempotency is checked against the real control plane), two proxies
watching the ring, and Prometheus scraping everything every second with the alert rules
loaded. Some KV traffic then gives the hit-ratio panels something to show.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dashboards.cluster import (
    TOKEN,
    ControlCluster,
    Prometheus,
    start_control_cluster,
    start_prometheus,
    start_proxy,
    venv_bin,
)
from tests.dashboards.expressions import (
    Expression,
    all_expressions,
    dashboard_expressions,
    metric_names_used,
    rule_expressions,
)
from tests.dashboards.rules import RULES_FILE
from tests.deploy.containers import container_env
from tests.deploy.manifests import container_named, find, render
from tests.support.servers import (
    ProcessGroup,
    Proxy,
    memcached_url,
    redis_url,
    wait_until,
)

KEYS = 20
MISSES = 10


@dataclass
class Stack:
    cluster: ControlCluster
    proxies: list[Proxy]
    prometheus: Prometheus
    registration_output: list[str]


def run_registration_job(backends: list[str], control_urls: list[str], token_file: Path) -> str:
    """The rendered Job's shell script with the real `ringleader` on PATH, reading the
    token from `token_file` where the pod reads the mounted Secret."""
    job = find(render("dev"), "Job", "ringleader-register-backends")
    container = container_named(job, "register")
    env = {
        **container_env(container, "register-backends"),
        "PATH": f"{venv_bin()}:/usr/bin:/bin",
        "RINGLEADER_BACKENDS": " ".join(backends),
        "RINGLEADER_CONTROL": ",".join(control_urls),
        "RINGLEADER_TOKEN_FILE": str(token_file),
        "RINGLEADER_ATTEMPTS": "5",
    }
    proc = subprocess.run(
        [*container["command"], *container["args"]],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"registration Job script failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def drive_traffic(proxy: Proxy, prefix: str, keys: int = KEYS, misses: int = MISSES) -> None:
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        for i in range(keys):
            assert client.put(f"/v1/kv/{prefix}-{i}", content=b"v").status_code == 204
            assert client.get(f"/v1/kv/{prefix}-{i}").status_code == 200
        for i in range(misses):
            assert client.get(f"/v1/kv/{prefix}-absent-{i}").status_code == 404


def hit_ratio_has_value(prometheus: Prometheus) -> bool:
    (expression,) = panel_expressions("Cache hit ratio by route")
    result = prometheus.vector(expression.runnable())
    return any(r["metric"].get("route") == "kv" and not math.isnan(value(r)) for r in result)


def value(sample: dict[str, object]) -> float:
    pair = sample["value"]
    assert isinstance(pair, list)
    return float(pair[1])


def panel_expressions(title: str) -> list[Expression]:
    found = [
        e for e in dashboard_expressions() if e.where.split(": ", 1)[1].rsplit(" [", 1)[0] == title
    ]
    assert found, f"no dashboard panel titled {title!r}"
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("live-prometheus")
    procs = ProcessGroup(workdir)
    try:
        cluster = start_control_cluster(procs)
        cluster.wait_ready()
        backends = [memcached_url(procs.memcached(), name="mc-0"),
                    redis_url(procs.redis(), name="redis-0")]  # fmt: skip
        token_file = workdir / "token"
        token_file.write_text(TOKEN + "\n")
        first = run_registration_job(backends, cluster.urls, token_file)
        second = run_registration_job(backends, cluster.urls, token_file)
        proxies = [start_proxy(procs, cluster.urls) for _ in range(2)]
        # Counter series appear at their first increment. Created before the first scrape,
        # they are seen before and after the traffic, so rate() has an increase to show.
        for i, proxy in enumerate(proxies):
            drive_traffic(proxy, f"warmup{i}", keys=1, misses=1)
        jobs = {
            "ringleader-proxy": [p.admin_url.removeprefix("http://") for p in proxies],
            "ringleader-control": [u.removeprefix("http://") for u in cluster.urls],
        }
        prometheus = start_prometheus(procs, jobs, [RULES_FILE])
        wait_until(prometheus.targets_up, 20, "every target scraped successfully")
        for i, proxy in enumerate(proxies):
            drive_traffic(proxy, f"p{i}")
        wait_until(lambda: hit_ratio_has_value(prometheus), 20, "the traffic in Prometheus")
        yield Stack(cluster, proxies, prometheus, [first, second])
    finally:
        procs.cleanup()


def test_registration_job_is_idempotent(stack: Stack) -> None:
    first, second = stack.registration_output
    assert first.count("(no change)") == 0
    assert second.count("(no change)") == 2, second


def test_every_expression_parses_and_runs(stack: Stack) -> None:
    failures = []
    for expression in all_expressions():
        body = stack.prometheus.query(expression.runnable())
        if body["status"] != "success":
            failures.append(f"{expression.where}: {body.get('error')}")
    assert not failures, "\n".join(failures)


def test_rules_evaluate_in_prometheus(stack: Stack) -> None:
    """Prometheus loaded the rule file and evaluates every rule without error; on a
    healthy stack the alerts about leaders, epochs, backends and reachability are quiet."""

    def evaluated() -> bool:
        return all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in stack.prometheus.rules())

    wait_until(evaluated, 10, "every rule evaluated once")
    rules = stack.prometheus.rules()
    assert {r["name"] for r in rules} == {e.where.split(": ", 1)[1] for e in rule_expressions()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    quiet = {"RingleaderNoLeader", "RingleaderProxyEpochDisagreement",
             "RingleaderBackendDown", "RingleaderControlPlaneUnreachable",
             "RingleaderHighErrorRate"}  # fmt: skip
    active = {r["name"] for r in rules if r["state"] != "inactive"}
    assert not active & quiet


def test_hit_ratio_epoch_and_leader_return_data(stack: Stack) -> None:
    prom = stack.prometheus
    (ratio,) = panel_expressions("Cache hit ratio by route")
    kv = [r for r in prom.vector(ratio.runnable()) if r["metric"].get("route") == "kv"]
    assert kv
    assert 0 < value(kv[0]) <= 1

    epoch = stack.proxies[0].admin_url + "/status"
    current = httpx.get(epoch, timeout=2).json()["epoch"]
    assert current >= 2, "two backends were added"
    (per_proxy,) = panel_expressions("Ring epoch per proxy")
    epochs = [value(r) for r in prom.vector(per_proxy.runnable())]
    assert epochs == [current] * len(stack.proxies)
    (spread,) = panel_expressions("Epoch spread (max - min)")
    assert [value(r) for r in prom.vector(spread.runnable())] == [0.0]

    (leader,) = panel_expressions("Leader")
    leaders = prom.vector(leader.runnable())
    assert len(leaders) == len(stack.cluster.nodes)
    assert sorted(value(r) for r in leaders) == [0.0, 0.0, 1.0]
    (knowing,) = panel_expressions("Nodes knowing a leader")
    assert [value(r) for r in prom.vector(knowing.runnable())] == [3.0]


def exposed_names(url: str) -> set[str]:
    """Metric names a /metrics page can be queried by; histograms as _bucket/_sum/_count
    and counters with _total, including families that have no samples yet."""
    names: set[str] = set()
    text = httpx.get(url, timeout=5).text
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_every_metric_name_in_dashboards_exists(stack: Stack) -> None:
    exposed: set[str] = set()
    for proxy in stack.proxies:
        exposed |= exposed_names(proxy.admin_url + "/metrics")
    for url in stack.cluster.urls:
        exposed |= exposed_names(url + "/metrics")
    used = metric_names_used()
    assert used, "no metric names found in dashboards/"
    missing = sorted(used - exposed)
    assert not missing, f"dashboards/ uses metrics no process exposes: {missing}"
