"""SIGTERM on a leader hands leadership to the most up-to-date follower before the node exits,
so a graceful restart costs no election timeout. In-process drivers, then a real 3-node
cluster under a steady write load."""

from __future__ import annotations

import asyncio
import time

from control.raft.config import TICK_SECONDS
from control.raft.messages import AppendEntries
from tests.support.control_cluster import control_cluster
from tests.support.raft_nodes import IDS, LocalNodes, add_backend
from tests.support.servers import ProcessGroup, wait_until
from tests.support.write_load import BackendAdds, SteadyWrites

# The longest stretch without an acknowledged write from a SIGTERM of the leader on. The
# issue's target is 0.3 s (bench/control_rolling.py measures it). Measured here on the
# 2-core machine at load average 10-15: 0.08-0.23 s, and the hand-over itself 20-30 ms
# (the log's "seconds"). Once, at load 10, over 1 s: the machine starved the nodes'
# heartbeats into an election of their own. The bound leaves room for that; the log line
# shows the hand-over happened.
GAP_BOUND = 1.5


def test_the_leader_hands_over_to_the_follower_whose_log_matches_furthest() -> None:
    async def scenario() -> tuple[int, int | None, int, int]:
        nodes = LocalNodes("thread", disk_stall_timeout=None)
        await nodes.start()
        try:
            old = nodes.leader()
            assert old is not None
            behind, ahead = (i for i in IDS if i != old)
            # `behind` gets no new entries; heartbeats keep it a follower.
            nodes.cut = lambda m: (
                isinstance(m, AppendEntries) and m.to == behind and bool(m.entries)
            )
            for n in range(3):
                await nodes.nodes[old].propose(add_backend(f"memcached://10.0.0.{n}:1"))
            new = await nodes.nodes[old].hand_over_leadership()
            return ahead, new, nodes.nodes[old].core.term, nodes.nodes[ahead].core.term
        finally:
            await nodes.stop()

    ahead, new, old_term, new_term = asyncio.run(scenario())
    assert new == ahead
    assert old_term == new_term


def test_a_hand_over_that_cannot_complete_gives_up_after_an_election_timeout() -> None:
    async def scenario() -> tuple[int | None, float, float]:
        nodes = LocalNodes("thread", disk_stall_timeout=None)
        await nodes.start()
        try:
            old = nodes.leader()
            assert old is not None
            nodes.cut = lambda m: m.frm == old or m.to == old
            started = time.monotonic()
            new = await nodes.nodes[old].hand_over_leadership()
            limit = nodes.nodes[old].core.config.election_ticks_max * TICK_SECONDS
            return new, time.monotonic() - started, limit
        finally:
            await nodes.stop()

    new, took, limit = asyncio.run(scenario())
    assert new is None
    assert limit <= took < limit + 1.0


def test_a_follower_has_nothing_to_hand_over() -> None:
    async def scenario() -> int | None:
        nodes = LocalNodes("thread", disk_stall_timeout=None)
        await nodes.start()
        try:
            follower = next(i for i in IDS if i != nodes.leader())
            return await nodes.nodes[follower].hand_over_leadership()
        finally:
            await nodes.stop()

    assert asyncio.run(scenario()) is None


def test_sigterm_on_the_leader_under_load_hands_over_and_loses_no_write(
    procs: ProcessGroup,
) -> None:
    with control_cluster(procs) as cluster:
        writes = BackendAdds(cluster.token)
        load = SteadyWrites(cluster.urls, writes, every=0.02).start()
        try:
            wait_until(lambda: load.acked_count >= 50, 20, "writes flowing")
            old = cluster.wait_leader()
            followers = cluster.followers(old)
            process = cluster.nodes[old].process
            assert process is not None
            signalled = load.seconds()
            exit_code = process.terminate()
            acked = load.acked_count
            wait_until(lambda: load.acked_count >= acked + 50, 20, "writes under the new leader")
        finally:
            result = load.stop()
        gap, gap_ended = result.longest_gap(since=signalled)
        print(f"SIGTERM at {signalled:.2f} s; from then on the longest write gap {gap:.3f} s, "
              f"ending at {gap_ended:.2f} s; {len(result.acked)} writes acknowledged, p99 "
              f"latency {result.latency_quantile(0.99):.3f} s")  # fmt: skip
        assert exit_code == 0
        assert '"msg": "handed leadership over to' in process.log_path.read_text()
        assert result.refusals == []
        assert gap < GAP_BOUND
        new = cluster.wait_leader(among=followers)
        missing = writes.missing(lambda pool: set(cluster.backend_names(new, pool=pool)),
                                 result.acked)  # fmt: skip
        assert missing == []
