"""Scenarios from the Raft paper, driven message by message."""

from __future__ import annotations

import pytest

from control.raft.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Message
from control.raft.types import Role
from tests.control.raft.harness import Cluster, log_of


def _figure8(unsafe: bool) -> Cluster:
    """Figure 8 (c): while S5 is down, S1 leads term 4 and replicates 2@2 to a majority but
    its own term-4 entry reaches nobody; S5 holds 2@3 and can still be elected."""
    c = Cluster(5, max_entries_per_msg=1, check_quorum=False, unsafe_commit_old_term=unsafe)
    for i, terms in {1: [1, 2], 2: [1, 2], 3: [1], 4: [1], 5: [1, 3]}.items():
        c.seed_state(i, term=3, entries=log_of(terms))

    def drop_term4_appends(m: Message) -> bool:
        return (
            isinstance(m, AppendEntries)
            and any(e.term == 4 for e in m.entries)
            and c.core(m.to).term_at(m.prev_index) == m.prev_term
        )

    c.down.add(5)
    c.elect(1, drop=drop_term4_appends)
    assert c.core(1).term == 4
    assert [c.log_terms(i)[:2] for i in (1, 2, 3, 4)] == [[1, 2]] * 4
    return c


def test_figure8_old_term_entry_is_not_committed_by_counting() -> None:
    c = _figure8(unsafe=False)
    assert c.core(1).commit_index < 2, "2@2 is on a majority but must not count as committed"
    c.down = {1}
    c.elect(5)
    c.tick(times=c.core(5).config.heartbeat_ticks)
    for i in (2, 3, 4, 5):
        assert c.log_terms(i) == [1, 3, 5]
        assert c.core(i).commit_index == 3
    assert c.nodes[1].sm.index < 2, "S1 never applied the overwritten 2@2"


def test_figure8_counting_old_terms_would_lose_a_committed_entry() -> None:
    """The same schedule with the planted bug: S1 commits 2@2, which S5 then overwrites."""
    c = _figure8(unsafe=True)
    assert c.core(1).commit_index == 2
    assert c.nodes[1].sm.index == 2
    c.down = {1}
    c.elect(5)
    c.tick(times=c.core(5).config.heartbeat_ticks)
    assert c.log_terms(3)[1] == 3
    assert c.core(3).commit_index == 3


FIGURE7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def test_figure7_divergent_followers_converge_with_fast_backoff() -> None:
    c = Cluster(7)
    c.seed_state(1, term=7, entries=log_of([1, 1, 1, 4, 4, 5, 5, 6, 6, 6]))
    for i, terms in enumerate(FIGURE7.values(), start=2):
        c.seed_state(i, term=terms[-1], entries=log_of(terms))
    c.elect(1)
    c.tick(times=c.core(1).config.heartbeat_ticks)
    expected = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]
    for i in c.ids:
        assert c.log_terms(i) == expected, f"follower {i}"
        assert c.core(i).commit_index == len(expected)
    rejections_from_f = [
        m for m in c.delivered
        if isinstance(m, AppendEntriesResponse) and m.frm == 7 and not m.success
    ]
    assert len(rejections_from_f) <= 2, "one term per round trip, not one entry"


@pytest.mark.parametrize("pre_vote", [True, False])
def test_rejoining_partitioned_node_with_pre_vote_does_not_disrupt(pre_vote: bool) -> None:
    c = Cluster(3, pre_vote=pre_vote)
    c.elect(1)
    term = c.core(1).term
    c.isolate(3)
    c.tick(times=100)
    c.heal()
    c.tick(times=30)
    disrupted = c.core(1).role is not Role.LEADER or c.core(1).term != term
    assert disrupted is not pre_vote
    if pre_vote:
        assert [c.core(i).term for i in c.ids] == [term] * 3
        assert c.core(3).leader == 1


@pytest.mark.parametrize("check_quorum", [True, False])
def test_leader_cut_off_from_quorum_steps_down(check_quorum: bool) -> None:
    c = Cluster(3, check_quorum=check_quorum)
    c.elect(1)
    c.isolate(1)
    c.tick((1,), times=2 * c.core(1).config.election_ticks_min)
    assert (c.core(1).role is Role.LEADER) is not check_quorum
    c.tick((2, 3), times=40)
    assert len([i for i in c.leaders() if i != 1]) == 1


def test_far_behind_follower_receives_a_snapshot() -> None:
    c = Cluster(3, snapshot_threshold=5, snapshot_trailing=0)
    c.elect(1)
    c.isolate(3)
    for n in range(20):
        c.core(1).propose(b"cmd%d" % n)
        c.stabilize()
    leader = c.core(1)
    assert leader.first_index > c.core(3).last_index + 1, "node 3 needs compacted entries"
    c.heal()
    c.tick(times=5)
    assert any(isinstance(m, InstallSnapshot) and m.to == 3 for m in c.delivered)
    assert c.nodes[3].storage.load_snapshot() is not None
    assert c.nodes[3].sm.index == c.nodes[1].sm.index == leader.commit_index
    assert c.nodes[3].sm.digest == c.nodes[1].sm.digest
