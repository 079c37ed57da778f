"""Replacing a dead control node, as docs/runbook.md ("Replacing a control node") says,
with real processes and a steady write load through the API:

1. kill -9 a follower and delete its data;
2. `ringleader member remove` it;
3. start a new node (a new ID) with `--join` and `ringleader member add` it;
4. wait until `ringleader member list` shows it a voter, then kill -9 the old leader.

Writes keep working throughout (the two survivors of the old three and the new node are a
majority of the new configuration), and every acknowledged write is present at the end,
read linearizably. On the way, the removed ID is refused: by `member add`, by `--join`
and by `--peers` with its old (emptied) data directory.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.control_cluster import ControlCluster, control_cluster
from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    ServerProcess,
    free_port,
    ringleader_argv,
    wait_until,
)
from tests.support.write_load import BackendAdds, SteadyWrites

NEW_ID = 4
# A steady write every 50 ms: enough to see a gap, little enough for a loaded 2-core box.
WRITE_EVERY = 0.05
# Generous for a loaded 2-core machine: two elections (the old leader's death, and any
# check-quorum step-down while a node is down) and a retry pause each.
MAX_GAP = 10.0
# Generous: a learner catches up in well under a second here, elections take ~0.3 s.
VOTER_DEADLINE = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ControlCluster]:
    procs = ProcessGroup(tmp_path)
    try:
        with control_cluster(procs) as c:
            yield c
    finally:
        procs.cleanup()


def cli(
    cluster: ControlCluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RINGLEADER_TOKEN"}
    live = [n.url for n in cluster.nodes.values() if n.alive()]
    argv = [*ringleader_argv(), *args, "--control", ",".join(live),
            "--token-file", str(cluster.token_file)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr or result.stdout}")
    return result


def member_list(cluster: ControlCluster) -> dict[str, Any]:
    return dict(json.loads(cli(cluster, "member", "list", "--json").stdout))


def members(cluster: ControlCluster) -> dict[int, dict[str, Any]]:
    return {m["id"]: m for m in member_list(cluster)["members"]}


def start_control(
    cluster: ControlCluster, node_id: int, port: int, data_dir: Path, *how: str
) -> ServerProcess:
    args = ["control", "--id", str(node_id), "--listen", f"{LOOPBACK}:{port}",
            "--data-dir", str(data_dir), "--token-file", str(cluster.token_file), *how]  # fmt: skip
    return cluster.procs.ringleader(args, port, name=f"control-{node_id}")


def test_replace_a_dead_node_under_write_load(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    victim = next(i for i in cluster.nodes if i != leader)
    writes = BackendAdds(cluster.token)
    load = SteadyWrites(cluster.urls, writes, every=WRITE_EVERY).start()
    try:
        wait_until(lambda: load.acked_count >= 20, 20, "writes before the fault")

        # 1. The victim dies and its disk is lost.
        cluster.kill(victim)
        shutil.rmtree(cluster.nodes[victim].data_dir)
        cluster.nodes[victim].data_dir.mkdir()

        # 2. Remove it: for good.
        cli(cluster, "member", "remove", str(victim))
        assert victim not in members(cluster)
        refused = cli(cluster, "member", "add", f"{victim}={cluster.url(victim)}", check=False)
        assert refused.returncode != 0
        assert "can never rejoin" in refused.stderr

        # ...and its old process, restarted on the emptied directory, refuses to start.
        old = cluster.procs.ringleader(cluster.argv(victim), cluster.nodes[victim].port,
                                       name=f"control-{victim}-again")  # fmt: skip
        assert old.popen is not None
        assert old.popen.wait(30) != 0
        assert "can never rejoin" in old.log_tail()

        # 3. A new node under a new ID joins, and is added.
        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        data_dir = cluster.workdir / f"node-{NEW_ID}"
        data_dir.mkdir()
        joining = ",".join(cluster.url(i) for i in cluster.nodes if i != victim)
        new = start_control(cluster, NEW_ID, port, data_dir, "--join", joining)
        new.wait_port()
        cli(cluster, "member", "add", f"{NEW_ID}={url}")

        # A node under the removed ID cannot join either.
        again = start_control(cluster, victim, free_port(), cluster.nodes[victim].data_dir,
                              "--join", joining)  # fmt: skip
        assert again.popen is not None
        assert again.popen.wait(30) != 0
        assert "can never rejoin" in again.log_tail()

        # 4. Once it votes, the old leader can die and the cluster still has a majority.
        def voter() -> bool:
            return members(cluster).get(NEW_ID, {}).get("role") == "voter"

        wait_until(voter, VOTER_DEADLINE, f"node {NEW_ID} to become a voter")
        listed = member_list(cluster)
        new_member = members(cluster)[NEW_ID]
        assert new_member["reachable"]
        assert new_member["url"] == url
        assert new_member["match"] > 0
        # The leader now if it is one of the old nodes (node 4 may have been elected
        # meanwhile; then the leader the procedure started under).
        if listed["leader"] in cluster.nodes:
            leader = listed["leader"]
        before_kill = load.acked_count
        killed_at = load.seconds()
        cluster.kill(leader)
        survivor = next(i for i in cluster.nodes if i not in (victim, leader))
        wait_until(lambda: load.acked_count >= before_kill + 50, 30, "writes after the kill")
    finally:
        result = load.stop()

    assert not result.refusals, result.refusals[:3]
    for base in (cluster.url(survivor), url):
        missing = writes.missing(functools.partial(_names, cluster, base), result.acked)
        assert not missing, f"{base} lacks acknowledged writes {missing[:10]}"
    gap, _ = result.longest_gap()
    after_kill, _ = result.longest_gap(since=killed_at)
    print(f"{len(result.acked)} writes acknowledged, {len(result.unacked)} outcome unknown; "
          f"longest gap {gap:.2f} s, after the leader's death {after_kill:.2f} s")  # fmt: skip
    assert gap < MAX_GAP


def _names(cluster: ControlCluster, base: str, pool: str) -> set[str]:
    """Backend names read linearizably (ReadIndex through the leader) from the node at
    `base`."""
    r = cluster.http.get(f"{base}/v1/pools/{pool}/backends", timeout=10)
    assert r.status_code == 200, r.text
    return {b["name"] for b in r.json()["backends"] if b["admin"] != "removed"}


def test_a_voter_restarted_on_an_emptied_data_directory_refuses_to_start(
    cluster: ControlCluster,
) -> None:
    """Finding 4: a node under an old ID with its data gone could vote twice in a term."""
    leader = cluster.wait_leader()
    cluster.write_acked("POST", "/v1/pools", {"pool": "before"})
    victim = next(i for i in cluster.nodes if i != leader)
    cluster.kill(victim)
    shutil.rmtree(cluster.nodes[victim].data_dir)
    cluster.nodes[victim].data_dir.mkdir()
    proc = cluster.procs.ringleader(cluster.argv(victim), cluster.nodes[victim].port,
                                    name=f"control-{victim}-emptied")  # fmt: skip
    assert proc.popen is not None
    assert proc.popen.wait(30) == 2
    assert "its data was lost" in proc.log_tail()
    assert f"ringleader member remove {victim}" in proc.log_tail()
    # Joining does not get around it: the ID is still a voter's.
    joining = ",".join(cluster.url(i) for i in cluster.nodes if i != victim)
    again = start_control(cluster, victim, cluster.nodes[victim].port,
                          cluster.nodes[victim].data_dir, "--join", joining)  # fmt: skip
    assert again.popen is not None
    assert again.popen.wait(30) == 2
    assert f"node {victim} is a voter of the cluster" in again.log_tail()
