"""A node whose storage write hangs: past --disk-stall-timeout a leader steps down so another
is elected, and a stalled node serves no linearizable read, ring watch or /readyz until the
write completes; then it recovers. In-process drivers on both write paths, then a real
3-node cluster with the leader's writes held and a real proxy following the new leader."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from control.disk_thread import HOLD_WRITES_ENV
from control.node import DISK_STALL_TIMEOUT, DiskStalled, LeadershipLost, RaftNode
from control.raft.config import TICK_SECONDS, RaftConfig
from control.registry import Outcome
from tests.support.control_cluster import (
    ControlCluster,
    backend_url,
    parse_metric,
)
from tests.support.raft_nodes import IDS, LocalNodes, add_backend
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port, wait_until

# A new leader must accept writes within this long of the old leader's disk hanging (the
# issue's target): the 0.8 s stall bound, then the stalled leader's TimeoutNow and one
# election. Measured in-process: 0.82-0.83 s; on a real cluster on the 2-core machine at
# load average 11-14 (other suites running): 1.56-2.17 s, the slow ones where the new
# leader, with one stalled peer, lost its check-quorum to a starved follower and a second
# election followed.
NEW_LEADER_WITHIN = 2.0
# Margin on top of the target for the real cluster on a loaded machine.
LOADED_MARGIN = 2.0


def test_the_default_bound_is_two_of_the_longest_election_timeouts() -> None:
    config = RaftConfig(node_id=1, peers=(1,))
    assert 2 * config.election_ticks_max * TICK_SECONDS == pytest.approx(DISK_STALL_TIMEOUT)


def _metric(nodes: LocalNodes, i: int, name: str) -> float:
    return parse_metric(generate_latest(nodes.metrics[i].registry).decode(), name)


@pytest.mark.parametrize("flushes", ["thread", "aio"])
def test_a_leader_whose_disk_hangs_steps_down_and_recovers_once_it_completes(
    flushes: str,
) -> None:
    async def scenario() -> float:
        nodes = LocalNodes(flushes, DISK_STALL_TIMEOUT)
        await nodes.start()
        try:
            old = nodes.leader()
            assert old is not None
            stalled = nodes.nodes[old]
            nodes.disks[old].hold()
            held_at = time.monotonic()
            pending = asyncio.ensure_future(stalled.propose(add_backend("memcached://10.0.0.1:1")))
            await nodes.until(lambda: nodes.leader() not in (None, old), 5, "a new leader")
            new = nodes.leader()
            assert new is not None
            await nodes.nodes[new].propose(add_backend("memcached://10.0.0.2:1"))
            took = time.monotonic() - held_at

            with pytest.raises(LeadershipLost):
                await pending
            assert stalled.core.storage_stalled
            assert stalled.status()["disk_stalled"] is True
            reason = stalled.catching_up()
            assert reason is not None
            assert "disk write has been in flight" in reason
            with pytest.raises(DiskStalled):
                await stalled.read_barrier()
            assert _metric(nodes, old, "ringleader_control_disk_stalled") == 1
            assert _metric(nodes, old, "ringleader_control_disk_stalls_total") == 1
            assert _metric(nodes, old, "ringleader_raft_leader") == 0

            nodes.disks[old].release()
            await nodes.until(
                lambda: stalled.catching_up() is None, 5, "the stalled node caught up"
            )
            assert not stalled.core.storage_stalled
            assert stalled.core.leader == new
            assert _metric(nodes, old, "ringleader_control_disk_stalled") == 0
            await nodes.until(
                lambda: stalled.status()["applied_index"]
                == nodes.nodes[new].status()["applied_index"],
                5, "the stalled node applied what the new leader did",
            )  # fmt: skip
            return took
        finally:
            await nodes.stop()

    took = asyncio.run(scenario())
    print(f"new leader accepted a write {took:.2f} s after the old leader's disk hung")
    assert took < NEW_LEADER_WITHIN


@pytest.mark.parametrize("flushes", ["thread", "aio"])
def test_a_follower_whose_disk_hangs_serves_nothing_and_the_leader_stays(flushes: str) -> None:
    async def scenario() -> None:
        nodes = LocalNodes(flushes, DISK_STALL_TIMEOUT)
        await nodes.start()
        try:
            leader = nodes.leader()
            assert leader is not None
            term = nodes.nodes[leader].core.term
            follower = next(i for i in IDS if i != leader)
            stalled = nodes.nodes[follower]
            nodes.disks[follower].hold()
            await nodes.nodes[leader].propose(add_backend("memcached://10.0.0.1:1"))
            await nodes.until(lambda: stalled.core.storage_stalled, 5, "the follower stalls")
            assert "disk write" in (stalled.catching_up() or "")
            with pytest.raises(DiskStalled):
                await stalled.read_barrier()
            # Writes go on through the other follower, under the same leader.
            await nodes.nodes[leader].propose(add_backend("memcached://10.0.0.2:1"))
            assert nodes.leader() == leader
            assert nodes.nodes[leader].core.term == term
            nodes.disks[follower].release()
            await nodes.until(lambda: stalled.catching_up() is None, 5, "the follower recovers")
        finally:
            await nodes.stop()

    asyncio.run(scenario())


def test_a_pause_of_the_whole_process_is_not_taken_for_a_stalled_disk() -> None:
    """SIGSTOP, or a swapped-out process, stops the clock of its own writes too: a write
    in flight across such a pause is no stall (the bound counts ticks, not wall time)."""

    async def scenario() -> tuple[float, int, int, int]:
        nodes = LocalNodes("thread", DISK_STALL_TIMEOUT)
        await nodes.start()
        try:
            leader = nodes.leader()
            assert leader is not None
            node = nodes.nodes[leader]
            term, commit = node.core.term, node.core.commit_index
            nodes.disks[leader].hold()
            pending = asyncio.ensure_future(node.propose(add_backend("memcached://10.0.0.1:1")))
            # Committed by the followers' disks while the leader's own write is held.
            await nodes.until(lambda: node.core.commit_index > commit, 5, "the entry committed")
            # Every node's loop stands still for twice the bound, and the write stays held
            # for half the bound after: long past it in wall time, well within it in ticks.
            threading.Timer(2.5 * DISK_STALL_TIMEOUT, nodes.disks[leader].release).start()
            time.sleep(2 * DISK_STALL_TIMEOUT)  # noqa: ASYNC251 - the pause under test
            await pending
            stalls = sum(_metric(nodes, i, "ringleader_control_disk_stalls_total") for i in IDS)
            return stalls, term, node.core.term, leader
        finally:
            await nodes.stop()

    stalls, term_before, term_after, _ = asyncio.run(scenario())
    assert stalls == 0
    assert term_after == term_before


def test_applies_held_behind_commit_make_a_node_not_caught_up() -> None:
    """Without a stall bound, a leader whose own write hangs still commits (its followers
    have the entry) but cannot apply: it must not call itself caught up meanwhile."""

    async def scenario() -> tuple[str | None, Outcome]:
        nodes = LocalNodes("thread", disk_stall_timeout=None)
        await nodes.start()
        try:
            leader = nodes.leader()
            assert leader is not None
            node: RaftNode[Outcome] = nodes.nodes[leader]
            nodes.disks[leader].hold()
            pending = asyncio.ensure_future(node.propose(add_backend("memcached://10.0.0.1:1")))
            await nodes.until(
                lambda: node.core.commit_index > node.status()["applied_index"], 5,
                "a commit the leader cannot apply",
            )  # fmt: skip
            await nodes.until(lambda: node.catching_up() is not None, 5, "the lag is reported")
            reason = node.catching_up()
            nodes.disks[leader].release()
            outcome = await pending
            await nodes.until(lambda: node.catching_up() is None, 5, "caught up again")
            return reason, outcome
        finally:
            await nodes.stop()

    reason, _ = asyncio.run(scenario())
    assert reason is not None
    assert "lags commit index" in reason


# -- a real cluster ----------------------------------------------------------------------------


def hold_file(cluster: ControlCluster, node_id: int) -> Path:
    return cluster.workdir / f"hold-writes-{node_id}"


def start_holdable_cluster(procs: ProcessGroup) -> ControlCluster:
    """A 3-node cluster whose node i holds every storage write while hold_file(i) exists."""
    cluster = ControlCluster(procs, procs.workdir / "cluster")
    for node_id in cluster.nodes:
        cluster.extra_env = {HOLD_WRITES_ENV: str(hold_file(cluster, node_id))}
        cluster.start_node(node_id)
    cluster.wait_leader()
    return cluster


def start_watching_proxy(procs: ProcessGroup, cluster: ControlCluster) -> str:
    """A real `ringleader proxy` taking the default pool's ring from the cluster; returns
    its admin URL."""
    listen, admin = free_port(), free_port()
    proc: ServerProcess = procs.ringleader(
        ["proxy", "--listen", f"{LOOPBACK}:{listen}", "--admin", f"{LOOPBACK}:{admin}",
         "--control", cluster.control_arg, "--token-file", str(cluster.token_file)],
        listen, name="proxy",
    )  # fmt: skip
    proc.wait_port()
    return f"http://{LOOPBACK}:{admin}"


def proxy_backends(admin_url: str) -> list[str]:
    try:
        status = httpx.get(admin_url + "/status", timeout=1).json()
    except (httpx.HTTPError, ValueError):
        return []
    return [b["name"] for b in status.get("backends", [])]


def test_a_real_leader_whose_disk_hangs_is_replaced_and_proxies_follow(
    procs: ProcessGroup,
) -> None:
    cluster = start_holdable_cluster(procs)
    try:
        cluster.write_acked("POST", "/v1/pools/default/backends", {"url": backend_url("before")})
        admin = start_watching_proxy(procs, cluster)
        wait_until(lambda: proxy_backends(admin) == ["before"], 20, "the proxy's first ring")
        old = cluster.wait_leader()
        followers = cluster.followers(old)

        hold_file(cluster, old).touch()
        held_at = time.monotonic()
        # Through the followers only: the old leader may not be asked at all.
        cluster.write_acked("POST", "/v1/pools/default/backends", {"url": backend_url("after")},
                            prefer=followers)  # fmt: skip
        took = time.monotonic() - held_at
        print(f"a new leader accepted a write {took:.2f} s after the leader's disk hung")
        assert took < NEW_LEADER_WITHIN + LOADED_MARGIN

        new = cluster.wait_leader(among=followers)
        assert new != old
        wait_until(lambda: sorted(proxy_backends(admin)) == ["after", "before"], 10,
                   "the proxy following the new leader's ring")  # fmt: skip

        stalled = cluster.status(old)
        assert stalled is not None
        assert stalled["disk_stalled"] is True
        assert stalled["role"] != "leader"
        ready = cluster.http.get(cluster.url(old) + "/readyz", timeout=2)
        assert ready.status_code == 503
        assert "disk write has been in flight" in ready.json()["reason"]
        read = cluster.http.get(cluster.url(old) + "/v1/pools/default/backends", timeout=5)
        assert read.status_code == 503
        assert "disk write" in read.json()["message"]
        watch = cluster.http.get(
            cluster.url(old) + "/v1/pools/default/ring",
            params={"wait_epoch": "0", "timeout": "1"}, timeout=5,
        )  # fmt: skip
        assert watch.status_code == 503
        assert "disk write" in watch.json()["message"]
        assert cluster.metric(old, "ringleader_control_disk_stalled") == 1
        assert cluster.metric(old, "ringleader_control_disk_stalls_total") >= 1

        hold_file(cluster, old).unlink()
        wait_until(
            lambda: cluster.http.get(cluster.url(old) + "/readyz", timeout=2).status_code == 200,
            10, "the old leader ready again",
        )  # fmt: skip
        assert cluster.metric(old, "ringleader_control_disk_stalled") == 0
        assert "after" in cluster.backend_names(old)
        process = cluster.nodes[old].process
        assert process is not None
        log = process.log_path.read_text()
        assert '"msg": "disk write in flight for' in log
    finally:
        for node_id in cluster.nodes:
            hold_file(cluster, node_id).unlink(missing_ok=True)
        cluster.close()
