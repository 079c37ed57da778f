"""Operator commands (`ringleader backend|ring|status|events`) against a real 3-node cluster:
tables by default, JSON with --json, any node of --control, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.control_cluster import ControlCluster, module_cluster
from tests.support.servers import LOOPBACK, free_port, ringleader_argv

DEADLINE = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    yield from module_cluster(tmp_path_factory, "ops")


def ringleader(
    *args: str, token: bool = True, cluster: ControlCluster | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = [*ringleader_argv(), *args]
    if cluster is not None and token:
        argv += ["--token-file", str(cluster.token_file)]
    base = {k: v for k, v in os.environ.items()
            if k not in ("RINGLEADER_TOKEN", "RINGLEADER_CONTROL")}  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=DEADLINE,
        env={**base, "USER": "tester", **(env or {})},
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def url_for(backend: str, port: int) -> str:
    return f"memcached://{LOOPBACK}:{port}?name={backend}"


def table_rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def backends_json(cluster: ControlCluster, *extra: str) -> dict[str, Any]:
    out = ok(ringleader("backend", "list", "--control", cluster.control_arg, "--json", *extra,
                        cluster=cluster))  # fmt: skip
    return dict(json.loads(out))


def test_backend_add_prints_a_line_and_commits(cluster: ControlCluster) -> None:
    backend = name()
    out = ok(ringleader("backend", "add", url_for(backend, 21001), "--why", "new capacity",
                        "--control", cluster.url(2), cluster=cluster))  # fmt: skip
    assert out.startswith(f"add {url_for(backend, 21001)}: pool default at epoch ")
    epoch = int(out.split("epoch ")[1].split()[0])
    listed = backends_json(cluster)
    assert listed["epoch"] >= epoch
    assert backend in [b["name"] for b in listed["backends"]]
    again = ok(ringleader("backend", "add", url_for(backend, 21001), "--control",
                          cluster.url(3), cluster=cluster))  # fmt: skip
    assert "(no change)" in again


def test_backend_list_table_and_json(cluster: ControlCluster) -> None:
    backend = name()
    ok(ringleader("backend", "add", url_for(backend, 21002) + "&weight=3", "--control",
                  cluster.control_arg, cluster=cluster))  # fmt: skip
    table = ok(ringleader("backend", "list", "--control", cluster.control_arg, cluster=cluster))
    lines = table.strip().splitlines()
    assert lines[0].startswith("pool default, epoch ")
    assert lines[1].split() == ["NAME", "URL", "WEIGHT", "ADMIN", "HEALTH", "IN", "RING",
                                "SINCE", "REASON"]  # fmt: skip
    row = next(r for r in table_rows(table) if r[0] == backend)
    assert row[1:6] == [f"memcached://{LOOPBACK}:21002?name={backend}&weight=3", "3", "active",
                        "up", "yes"]  # fmt: skip
    listed = backends_json(cluster)
    mine = next(b for b in listed["backends"] if b["name"] == backend)
    assert mine["weight"] == 3
    assert mine["in_ring"] is True


def test_drain_then_remove(cluster: ControlCluster) -> None:
    backend = name()
    ok(ringleader("backend", "add", url_for(backend, 21003), "--control", cluster.control_arg,
                  cluster=cluster))  # fmt: skip
    out = ok(ringleader("backend", "drain", backend, "--control", cluster.control_arg,
                        "--json", cluster=cluster))  # fmt: skip
    assert json.loads(out)["ok"] is True
    mine = next(b for b in backends_json(cluster)["backends"] if b["name"] == backend)
    assert (mine["admin"], mine["in_ring"]) == ("draining", False)
    ring = json.loads(ok(ringleader("ring", "--control", cluster.control_arg, "--json",
                                    cluster=cluster)))  # fmt: skip
    assert backend not in [b["name"] for b in ring["backends"]]
    ok(ringleader("backend", "remove", backend, "--control", cluster.control_arg,
                  cluster=cluster))  # fmt: skip
    assert backend not in [b["name"] for b in backends_json(cluster)["backends"]
                           if b["admin"] != "removed"]  # fmt: skip


def test_ring_table_and_key_lookup(cluster: ControlCluster) -> None:
    pool = f"ring{uuid.uuid4().hex[:6]}"
    ok(ringleader("pool", "create", pool, "--control", cluster.control_arg, cluster=cluster))
    only = name()
    ok(ringleader("backend", "add", url_for(only, 21004), "--pool", pool, "--control",
                  cluster.control_arg, cluster=cluster))  # fmt: skip
    table = ok(ringleader("ring", "--pool", pool, "--control", cluster.control_arg,
                          cluster=cluster))  # fmt: skip
    assert table.startswith(f"pool {pool}, epoch ")
    assert only in table
    located = json.loads(ok(ringleader("ring", "--key", "user:42", "--pool", pool, "--json",
                                       "--control", cluster.control_arg,
                                       cluster=cluster)))  # fmt: skip
    assert located["backend"] == only
    assert located["key"] == "user:42"
    text = ok(ringleader("ring", "--key", "user:42", "--pool", pool, "--control",
                         cluster.control_arg, cluster=cluster))  # fmt: skip
    assert text.startswith(f"'user:42' -> {only} ")
    # With more backends, keys spread: some key must land elsewhere than on the first one.
    # (fnv1a_64 is twemproxy's 32-bit FNV: keys differing only in a last digit cluster.)
    for port in (21005, 21006, 21007):
        ok(ringleader("backend", "add", url_for(name(), port), "--pool", pool, "--control",
                      cluster.control_arg, cluster=cluster))  # fmt: skip
    owners = {
        json.loads(ok(ringleader("ring", "--key", uuid.uuid4().hex, "--pool", pool, "--json",
                                 "--control", cluster.control_arg, cluster=cluster)))["backend"]
        for _ in range(8)
    }  # fmt: skip
    assert len(owners) >= 2


def test_ring_key_on_an_empty_pool_is_an_error(cluster: ControlCluster) -> None:
    pool = f"empty{uuid.uuid4().hex[:6]}"
    ok(ringleader("pool", "create", pool, "--control", cluster.control_arg, cluster=cluster))
    one_line_error(ringleader("ring", "--key", "k", "--pool", pool, "--control",
                              cluster.control_arg, cluster=cluster), "no backends")  # fmt: skip


def test_status_table_and_json(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    table = ok(ringleader("status", "--control", cluster.url(leader), cluster=cluster))
    rows = table_rows(table)
    assert rows[0] == ["ID", "URL", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"]
    assert sorted(r[0] for r in rows[1:]) == ["1", "2", "3"]
    assert [r[0] for r in rows[1:] if r[2] == "leader"] == [str(leader)]
    assert {r[4] for r in rows[1:]} == {str(leader)}
    data = json.loads(ok(ringleader("status", "--json", "--control", cluster.control_arg,
                                    cluster=cluster)))  # fmt: skip
    assert sorted(n["id"] for n in data["nodes"]) == [1, 2, 3]


def test_events_show_who_and_why(cluster: ControlCluster) -> None:
    backend = name()
    ok(ringleader("backend", "add", url_for(backend, 21008), "--why", "ticket-123",
                  "--control", cluster.control_arg, cluster=cluster))  # fmt: skip
    table = ok(ringleader("events", "--control", cluster.control_arg, cluster=cluster))
    header = table.strip().splitlines()[0].split()
    assert header == ["TIME", "EPOCH", "CHANGE", "BACKEND", "WHO", "WHY", "EVIDENCE"]
    row = next(line for line in table.splitlines() if backend in line)
    assert "cli:tester" in row
    assert "ticket-123" in row
    data = json.loads(ok(ringleader("events", "--json", "--limit", "3", "--control",
                                    cluster.control_arg, cluster=cluster)))  # fmt: skip
    assert len(data["events"]) <= 3
    mine = [e for e in data["events"] if e["backend"] == backend]
    assert [(e["kind"], e["who"], e["why"]) for e in mine] == [("add", "cli:tester", "ticket-123")]


def test_any_live_control_url_will_do(cluster: ControlCluster) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"
    backend = name()
    ok(ringleader("backend", "add", url_for(backend, 21009), "--control", dead, "--control",
                  cluster.url(3), cluster=cluster))  # fmt: skip
    listed = json.loads(ok(ringleader("backend", "list", "--json", "--control",
                                      f"{dead},{cluster.url(1)}", cluster=cluster)))  # fmt: skip
    assert backend in [b["name"] for b in listed["backends"]]


def test_control_urls_from_the_environment(cluster: ControlCluster) -> None:
    out = ok(ringleader("status", "--json", cluster=cluster,
                        env={"RINGLEADER_CONTROL": cluster.control_arg}))  # fmt: skip
    assert len(json.loads(out)["nodes"]) == 3


def test_token_from_the_environment(cluster: ControlCluster) -> None:
    backend = name()
    env = {"RINGLEADER_TOKEN": cluster.token}
    ok(ringleader("backend", "add", url_for(backend, 21010), "--control", cluster.control_arg,
                  token=False, cluster=cluster, env=env))  # fmt: skip
    assert backend in [b["name"] for b in backends_json(cluster)["backends"]]


# -- errors --------------------------------------------------------------------------------------


def test_unknown_flag(cluster: ControlCluster) -> None:
    result = ringleader("backend", "list", "--frobnicate", "--control", cluster.control_arg)
    assert result.returncode == 2
    one_line_error(result, "--frobnicate")


def test_unknown_action() -> None:
    result = ringleader("backend", "explode")
    assert result.returncode == 2
    one_line_error(result, "explode")


def test_write_without_a_token(cluster: ControlCluster) -> None:
    backend = name()
    result = ringleader("backend", "add", url_for(backend, 21011), "--control",
                        cluster.control_arg, token=False, cluster=cluster)  # fmt: skip
    one_line_error(result, "401")
    assert backend not in [b["name"] for b in backends_json(cluster)["backends"]]


def test_write_with_the_wrong_token(cluster: ControlCluster, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    backend = name()
    result = ringleader("backend", "add", url_for(backend, 21012), "--control",
                        cluster.control_arg, "--token-file", str(wrong))  # fmt: skip
    one_line_error(result, "401")
    assert backend not in [b["name"] for b in backends_json(cluster)["backends"]]


def test_missing_token_file(cluster: ControlCluster, tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = ringleader("backend", "list", "--control", cluster.control_arg,
                        "--token-file", str(missing))  # fmt: skip
    one_line_error(result, str(missing))


@pytest.mark.parametrize("control", ["ftp://x", "127.0.0.1:7000", ","])
def test_bad_control_url(control: str) -> None:
    one_line_error(ringleader("status", "--control", control), "--control")


def test_unreachable_control_plane() -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"
    one_line_error(ringleader("status", "--control", dead), "unavailable")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("backend", "add", "not-a-url"), "400"),
        (("backend", "add", "memcached://10.1.1.1:11211?weight=-1"), "weight"),
        (("backend", "remove", "no-such-backend"), "404"),
        (("backend", "list", "--pool", "no-such-pool"), "404"),
        (("rollback", "999999999"), "404"),
    ],
)
def test_refused_commands(cluster: ControlCluster, args: tuple[str, ...], needle: str) -> None:
    one_line_error(ringleader(*args, "--control", cluster.control_arg, cluster=cluster), needle)
