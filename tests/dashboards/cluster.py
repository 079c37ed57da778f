"""Real processes for the dashboard and alert tests: a 3-node `ringleader control` cluster,
proxies that take their ring from it, and a Prometheus server scraping all of them.

Everything listens on loopback on free ports, is started through `ProcessGroup` (ended by
PID at teardown), and every wait polls with a deadline.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.servers import (
    LOOPBACK,
    STARTUP_DEADLINE,
    ProcessGroup,
    Proxy,
    ServerProcess,
    free_port,
    port_open,
    wait_until,
)

TOKEN = "dashboards-test-token"


def env_with_token() -> dict[str, str]:
    return {**os.environ, "RINGLEADER_TOKEN": TOKEN}


def get_json(url: str, timeout: float = 2.0) -> Any:
    return httpx.get(url, timeout=timeout).json()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ControlCluster:
    nodes: dict[int, ServerProcess]

    @property
    def urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{p.port}" for p in self.nodes.values()]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every node knows the leader and has applied what is committed (/readyz)."""
        for node_id, proc in self.nodes.items():
            url = f"http://{LOOPBACK}:{proc.port}/readyz"

            def ready(proc: ServerProcess = proc, url: str = url) -> bool:
                if not proc.alive():
                    raise RuntimeError(f"control node exited early:\n{proc.log_tail()}")
                return answers(url)

            wait_until(ready, timeout, f"control node {node_id} /readyz")


def start_control_cluster(procs: ProcessGroup, size: int = 3) -> ControlCluster:
    ports = {node_id: free_port() for node_id in range(1, size + 1)}
    peers = ",".join(f"{i}=http://{LOOPBACK}:{port}" for i, port in ports.items())
    nodes: dict[int, ServerProcess] = {}
    for node_id, port in ports.items():
        data_dir = procs.workdir / f"control-{node_id}"
        data_dir.mkdir()
        args = ["control", "--id", str(node_id), "--listen", f"{LOOPBACK}:{port}",
                "--peers", peers, "--data-dir", str(data_dir)]  # fmt: skip
        nodes[node_id] = procs.ringleader(args, port, f"control{node_id}", env_with_token())
    for proc in nodes.values():
        proc.wait_port()
    return ControlCluster(nodes)


def start_proxy(procs: ProcessGroup, control_urls: list[str]) -> Proxy:
    """A proxy routing with the control plane's ring for the pool `default`."""
    listen, admin = free_port(), free_port()
    args = ["proxy", "--listen", f"{LOOPBACK}:{listen}", "--admin", f"{LOOPBACK}:{admin}",
            "--control", ",".join(control_urls), "--pool", "default"]  # fmt: skip
    proc = procs.ringleader(args, listen, "proxy", env_with_token())
    proxy = Proxy(proc, f"http://{LOOPBACK}:{listen}", f"http://{LOOPBACK}:{admin}")
    proxy.wait_ready()
    return proxy


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "prometheus is not installed: scripts/test.sh installs the Debian package "
            "`prometheus`; the dashboard queries are checked against a real server"
        )
    return path


@dataclass
class Prometheus:
    process: ServerProcess
    url: str

    def query(self, promql: str) -> dict[str, Any]:
        """The raw /api/v1/query answer (status "success" or "error")."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body: dict[str, Any] = reply.json()
        return body

    def vector(self, promql: str) -> list[dict[str, Any]]:
        body = self.query(promql)
        assert body["status"] == "success", f"{promql}: {body.get('error')}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> bool:
        targets = get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    def rules(self) -> list[dict[str, Any]]:
        groups = get_json(f"{self.url}/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


def start_prometheus(
    procs: ProcessGroup, jobs: dict[str, list[str]], rule_files: list[Path]
) -> Prometheus:
    """Prometheus scraping `jobs` ({job: [host:port, ...]}) every second, with the given
    rule files loaded, storing in the test's directory."""
    port = free_port()
    workdir = procs.workdir / "prometheus"
    workdir.mkdir()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                   "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            # A namespace label, as the ServiceMonitors' targets have, for the
            # `by (namespace, job)` groupings and the dashboards' $namespace filter.
            {"job_name": job, "static_configs": [{"targets": targets,
                                                  "labels": {"namespace": "ringleader-test"}}]}
            for job, targets in jobs.items()
        ],
    }  # fmt: skip
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    argv = [
        prometheus_binary(),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    proc = procs.spawn("prometheus", argv, port)
    url = f"http://{LOOPBACK}:{port}"

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"prometheus exited early:\n{proc.log_tail()}")
        return port_open(port) and answers(f"{url}/-/ready")

    wait_until(ready, STARTUP_DEADLINE, "prometheus /-/ready")
    return Prometheus(proc, url)


def venv_bin() -> str:
    """Where this interpreter's `ringleader` console script lives."""
    return str(Path(sys.executable).parent)
