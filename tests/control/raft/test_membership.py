"""Single-server membership changes with learners, in the pure core."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from control.raft.codec import decode_message, encode_message
from control.raft.config import RaftConfig
from control.raft.core import RaftCore
from control.raft.diskstore import DiskStorage
from control.raft.errors import NotLeader, RequestDropped
from control.raft.membership import Membership, MembershipError, one_server_apart
from control.raft.memstore import MemoryStorage
from control.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
)
from control.raft.progress import Progress
from control.raft.simnode import LocalNode
from control.raft.storage import load_state
from control.raft.types import Entry, EntryKind, NodeId, Role, Snapshot
from tests.control.raft.harness import Cluster

URLS = {i: f"http://127.0.0.1:{7000 + i}" for i in range(1, 10)}


class MemberCluster(Cluster):
    """The harness cluster with nodes that join later (no bootstrap configuration)."""

    def __init__(self, n: int, seed: int = 0, **config: object) -> None:
        self.bootstrap = tuple(range(1, n + 1))
        super().__init__(n, seed, **config)

    def config(self, i: NodeId) -> RaftConfig:
        peers = self.bootstrap if i in self.bootstrap else ()
        urls = tuple((p, URLS[p]) for p in self.bootstrap)
        return RaftConfig(node_id=i, peers=peers, peer_urls=urls, **self._config)

    def join(self, i: NodeId) -> None:
        self.ids = (*self.ids, i)
        self.read_states[i] = []
        self.nodes[i] = LocalNode(self.config(i), random.Random(i))

    def change(self, leader: NodeId, membership: Membership) -> int:
        index = self.core(leader).propose_membership(membership)
        self.stabilize()
        return index

    def settle(self, ticks: int = 30) -> None:
        self.tick(times=ticks)


def elected(n: int = 3, **config: int) -> MemberCluster:
    cluster = MemberCluster(n, **config)
    cluster.elect(1)
    return cluster


def test_bootstrap_membership_comes_from_peers_with_their_urls() -> None:
    cluster = elected()
    m = cluster.core(2).membership
    assert dict(m.voters) == {i: URLS[i] for i in (1, 2, 3)}
    assert not m.learners
    assert not m.removed
    assert cluster.core(1).membership_index == 0


def test_added_learner_catches_up_and_is_promoted_and_then_counts_for_quorum() -> None:
    cluster = elected()
    for n in range(5):
        cluster.core(1).propose(f"cmd{n}".encode())
    cluster.stabilize()
    cluster.join(4)
    add = cluster.change(1, cluster.core(1).membership.add_learner(4, URLS[4]))
    assert cluster.core(4).last_index >= add
    assert 4 in cluster.core(2).membership.learners
    cluster.settle()
    assert 4 in cluster.core(1).membership.voters
    assert cluster.core(1).membership_index > add
    # Now four voters: a quorum is three, so the leader and one follower cannot commit.
    cluster.isolate(3)
    cluster.isolate(4)
    index = cluster.core(1).propose(b"needs three")
    cluster.stabilize()
    assert cluster.core(1).commit_index < index
    cluster.heal()
    cluster.settle(5)
    assert cluster.core(1).commit_index >= index


def test_a_learner_does_not_count_for_commit_and_never_campaigns() -> None:
    cluster = elected(learner_promotion_lag=0)
    cluster.join(4)
    cluster.isolate(4)
    cluster.change(1, cluster.core(1).membership.add_learner(4, URLS[4]))
    # The learner never acknowledged anything, so it is not promoted...
    cluster.settle()
    assert 4 in cluster.core(1).membership.learners
    # ...and the three voters commit without it.
    index = cluster.core(1).propose(b"x")
    cluster.settle(3)
    assert cluster.core(1).commit_index >= index
    # A node that is not a voter in its own configuration never campaigns.
    cluster.heal()
    cluster.down = {1, 2, 3}
    cluster.tick(ids=(4,), times=100)
    assert cluster.core(4).role is Role.FOLLOWER


def test_a_removed_server_cannot_disrupt_a_cluster_with_a_leader() -> None:
    cluster = elected()
    core = cluster.core(2)
    term = core.term
    core.step(RequestVote(9, 2, term + 5, 100, term + 5))
    core.step(RequestVote(9, 2, term + 1, 100, term + 1, pre_vote=True))
    assert core.term == term
    assert not core.has_ready()


def test_a_candidate_counts_only_the_votes_of_its_voters() -> None:
    core = RaftCore(RaftConfig(node_id=1, peers=(1, 2, 3), pre_vote=False), random.Random(0))
    while core.role is not Role.CANDIDATE:
        core.tick()
    for outsider in (7, 8, 9):
        core.step(RequestVoteResponse(outsider, 1, core.term, True))
    assert core.role is Role.CANDIDATE
    core.step(RequestVoteResponse(2, 1, core.term, True))
    assert core.soft_state.role is Role.LEADER


def test_a_node_without_a_configuration_never_campaigns() -> None:
    core = RaftCore(RaftConfig(node_id=4, peers=()), random.Random(0))
    for _ in range(100):
        core.tick()
    assert core.role is Role.FOLLOWER
    assert core.term == 0


def test_removing_a_follower_shrinks_the_quorum_and_tells_it() -> None:
    cluster = elected(5)
    remove = cluster.change(1, cluster.core(1).membership.remove(5))
    cluster.settle()
    assert cluster.core(5).removed
    assert not cluster.core(1).removed
    assert 5 in cluster.core(1).membership.removed
    assert 5 not in cluster.core(1).member_matches()
    # Four voters: 1, 2 and 3 commit without 4 and 5.
    cluster.down = {4, 5}
    index = cluster.core(1).propose(b"x")
    cluster.settle(3)
    assert cluster.core(1).commit_index >= index > remove


def test_removed_ids_can_never_rejoin() -> None:
    cluster = elected()
    cluster.change(1, cluster.core(1).membership.remove(3))
    with pytest.raises(MembershipError, match="can never rejoin"):
        cluster.core(1).membership.add_learner(3, URLS[3])
    forged = Membership(cluster.core(1).membership.voters, {3: URLS[3]}, frozenset())
    with pytest.raises(MembershipError):
        cluster.core(1).propose_membership(forged)


def test_the_leader_cannot_remove_itself_without_transferring_first() -> None:
    cluster = elected()
    with pytest.raises(MembershipError, match="transfer leadership"):
        cluster.core(1).propose_membership(cluster.core(1).membership.remove(1))
    cluster.core(1).transfer_leadership(2)
    cluster.settle(3)
    assert cluster.core(2).role is Role.LEADER
    cluster.change(2, cluster.core(2).membership.remove(1))
    cluster.settle()
    assert cluster.core(1).removed
    assert set(cluster.core(2).membership.voters) == {2, 3}


def test_one_change_at_a_time_and_only_after_a_commit_in_term() -> None:
    cluster = elected()
    leader = cluster.core(1)
    cluster.isolate(2)
    cluster.isolate(3)
    leader.propose_membership(leader.membership.remove(3))
    with pytest.raises(RequestDropped, match="not committed"):
        leader.propose_membership(leader.membership.remove(2))
    with pytest.raises(NotLeader):
        cluster.core(2).propose_membership(leader.membership)
    with pytest.raises(MembershipError, match="one server"):
        leader.propose_membership(Membership.of_voters({1: URLS[1]}))
    # A new leader has not committed in its term yet.
    fresh = RaftCore(RaftConfig(node_id=1, peers=(1,)), random.Random(0))
    fresh.tick()
    for _ in range(30):
        fresh.tick()
    assert fresh.role is Role.LEADER
    with pytest.raises(RequestDropped, match="of its term"):
        fresh.propose_membership(fresh.membership.add_learner(2, URLS[2]))


def test_an_uncommitted_change_is_undone_when_a_new_leader_replaces_it() -> None:
    cluster = elected()
    cluster.isolate(1)
    cluster.core(1).propose_membership(cluster.core(1).membership.remove(3))
    assert 3 in cluster.core(1).membership.removed
    cluster.heal()
    cluster.down = {1}
    cluster.settle(60)
    assert cluster.leaders()
    cluster.down = set()
    cluster.settle(5)
    assert cluster.core(1).role is Role.FOLLOWER
    assert 3 in cluster.core(1).membership.voters
    assert not cluster.core(1).membership.removed


def test_quorum_value_ignores_departed_and_learners_after_restart() -> None:
    cluster = elected()
    cluster.join(4)
    cluster.change(1, cluster.core(1).membership.add_learner(4, URLS[4]))
    cluster.settle()
    cluster.change(1, cluster.core(1).membership.remove(2))
    cluster.settle()
    for i in (1, 3, 4):
        cluster.restart(i)
        assert set(cluster.core(i).membership.voters) == {1, 3, 4}
        assert cluster.core(i).membership.removed == {2}
    cluster.down = {2}
    cluster.elect(3)
    index = cluster.core(3).propose(b"after restart")
    cluster.settle(3)
    assert cluster.core(4).commit_index >= index


def test_configuration_travels_in_snapshots_and_restarts_from_them() -> None:
    cluster = elected(snapshot_threshold=4, snapshot_trailing=0)
    cluster.change(1, cluster.core(1).membership.remove(3))
    for n in range(10):
        cluster.core(1).propose(f"{n}".encode())
        cluster.stabilize()
    snap = cluster.core(1).snapshot
    assert snap is not None
    assert snap.membership is not None
    assert snap.membership.removed == {3}
    # A learner that joins now gets the snapshot, and with it the configuration.
    cluster.join(4)
    cluster.change(1, cluster.core(1).membership.add_learner(4, URLS[4]))
    cluster.settle()
    joined = cluster.core(4)
    assert joined.snapshot is not None
    assert set(joined.membership.voters) == {1, 2, 4}
    assert joined.membership.removed == {3}
    # A restart from that storage keeps it: the snapshot, then the log's entries.
    cluster.restart(4)
    assert set(cluster.core(4).membership.voters) == {1, 2, 4}


def test_a_snapshot_without_a_configuration_means_the_bootstrap_one() -> None:
    storage = MemoryStorage()
    storage.save_snapshot(Snapshot(5, 2, b"old"))
    storage.reset(5)
    config = RaftConfig(node_id=1, peers=(1, 2, 3), peer_urls=((2, URLS[2]),))
    core = RaftCore(config, random.Random(0), load_state(storage))
    assert set(core.membership.voters) == {1, 2, 3}
    assert core.membership.voters[2] == URLS[2]


def test_snapshot_and_config_entry_encodings_round_trip() -> None:
    m = Membership({1: URLS[1]}, {2: URLS[2]}, frozenset({3}))
    assert Membership.from_bytes(m.to_bytes()) == m
    snap = Snapshot(9, 2, b"data", m)
    message = InstallSnapshot(1, 2, 2, snap)
    assert decode_message(encode_message(message)) == message
    old = InstallSnapshot(1, 2, 2, Snapshot(9, 2, b"data"))
    assert decode_message(encode_message(old)) == old
    with pytest.raises(MembershipError):
        Membership.from_bytes(b'{"v": 2}')
    with pytest.raises(MembershipError):
        Membership({1: "a"}, {1: "a"})


def test_one_server_apart() -> None:
    m = Membership.of_voters({1: URLS[1], 2: URLS[2]})
    assert one_server_apart(m, m.add_learner(3, URLS[3]))
    assert one_server_apart(m.add_learner(3, URLS[3]), m.add_learner(3, URLS[3]).promote(3))
    assert one_server_apart(m, m.remove(2))
    assert not one_server_apart(m, m)
    assert not one_server_apart(m, Membership.of_voters({1: URLS[1]}))
    assert not one_server_apart(m.remove(2), Membership.of_voters({1: URLS[1]}))


def test_a_follower_that_lost_its_log_is_caught_up_without_reject_ping_pong() -> None:
    """Finding 4: after a follower's data is lost, the leader's probes at `match` were
    refused forever at network speed."""
    cluster = elected()
    for n in range(200):
        cluster.core(1).propose(f"{n}".encode())
        cluster.stabilize()
    cluster.nodes[3] = LocalNode(cluster.config(3), random.Random(3))
    before = len(cluster.delivered)
    cluster.core(1).propose(b"after the loss")
    cluster.settle(10)
    rejects = [
        m
        for m in cluster.delivered[before:]
        if isinstance(m, AppendEntriesResponse) and not m.success and m.frm == 3
    ]
    assert len(rejects) <= 3
    assert cluster.core(3).last_index == cluster.core(1).last_index


def test_progress_forgets_match_when_the_probe_at_match_is_refused() -> None:
    pr = Progress(50)
    pr.on_match(40)
    pr.become_probe()
    assert pr.on_reject(40, 0)
    assert (pr.match, pr.next) == (0, 1)


def test_a_joining_node_accepts_the_leaders_log_and_learns_the_configuration() -> None:
    core = RaftCore(RaftConfig(node_id=4, peers=()), random.Random(0))
    m = Membership.of_voters({1: URLS[1]}).add_learner(4, URLS[4])
    entries = (Entry(1, 1, EntryKind.NOOP), Entry(2, 1, EntryKind.CONFIG, m.to_bytes()))
    core.step(AppendEntries(1, 4, 1, 0, 0, entries, 2))
    assert core.membership == m
    (answer,) = core.ready().messages
    assert isinstance(answer, AppendEntriesResponse)
    assert answer.success


def test_disk_snapshots_keep_the_configuration_and_old_ones_still_load(tmp_path: Path) -> None:
    m = Membership({1: URLS[1], 4: URLS[4]}, {5: URLS[5]}, frozenset({2, 3}))
    with DiskStorage(str(tmp_path)) as storage:
        storage.save_snapshot(Snapshot(7, 2, b"registry", m))
    with DiskStorage(str(tmp_path)) as storage:
        assert storage.load_snapshot() == Snapshot(7, 2, b"registry", m)
        storage.save_snapshot(Snapshot(9, 3, b"older format"))
    with DiskStorage(str(tmp_path)) as storage:
        assert storage.load_snapshot() == Snapshot(9, 3, b"older format", None)


def test_a_joining_node_gives_no_vote_until_it_has_a_configuration() -> None:
    core = RaftCore(RaftConfig(node_id=4, peers=()), random.Random(0))
    core.step(RequestVote(1, 4, 1, 0, 0))
    (answer,) = core.ready().messages
    assert isinstance(answer, RequestVoteResponse)
    assert not answer.granted
    assert core.vote is None
