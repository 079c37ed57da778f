"""RaftCore.set_storage_stalled: a node whose disk write hangs leaves elections to the others,
and RaftCore.match_indexes, which a leader hands over by."""

from __future__ import annotations

import random

from control.raft.config import RaftConfig
from control.raft.core import RaftCore
from control.raft.messages import Heartbeat, RequestVote, RequestVoteResponse, TimeoutNow
from control.raft.types import Role
from tests.control.raft.harness import Cluster


def test_a_stalled_leader_steps_down_at_once_and_sends_no_more_heartbeats() -> None:
    c = Cluster(3)
    c.elect(1)
    term = c.core(1).term
    c.core(1).set_storage_stalled(True)
    assert c.core(1).role is Role.FOLLOWER
    assert c.core(1).term == term  # stepping down raises no term
    assert c.core(1).leader is None
    for _ in range(3 * c.core(1).config.heartbeat_ticks):
        c.core(1).tick()
    assert not [m for m in c.core(1).take_messages() if isinstance(m, Heartbeat)]


def test_a_stalled_leader_tells_the_follower_whose_log_matches_furthest_to_campaign() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.core(1).propose(b"x")
    c.stabilize()
    c.heal()
    leader = c.core(1)
    leader.set_storage_stalled(True)
    # Released at once, though the stalled write holds back the next Ready.
    (handover,) = leader.take_messages()
    assert handover == TimeoutNow(1, 2, leader.term)
    c.core(2).step(handover)
    c.stabilize()
    assert c.leaders() == [2]


def test_the_others_elect_a_new_leader_and_the_stalled_node_follows_it() -> None:
    c = Cluster(3)
    c.elect(1)
    c.core(1).set_storage_stalled(True)
    c.tick(times=3 * c.core(1).config.election_ticks_max)
    leaders = c.leaders()
    assert len(leaders) == 1
    assert leaders[0] != 1
    new = leaders[0]
    # Still stalled, node 1 follows (so it can catch up later) but never campaigns.
    assert c.core(1).role is Role.FOLLOWER
    assert c.core(1).leader == new
    index = c.core(new).propose(b"after the stall")
    c.stabilize()
    assert c.core(new).commit_index >= index


def test_a_stalled_follower_refuses_votes_and_pre_votes_and_never_campaigns() -> None:
    c = Cluster(3)
    c.elect(1)
    follower = c.core(2)
    follower.set_storage_stalled(True)
    c.isolate(1)  # the leader is gone: the lease no longer holds votes back
    for _ in range(3 * follower.config.election_ticks_max):
        follower.tick()
    assert follower.role is Role.FOLLOWER
    assert follower.take_messages() == ()
    _drain_messages(follower)
    term, last, last_term = (
        follower.term,
        follower.last_index,
        follower.term_at(follower.last_index),
    )
    assert last_term is not None
    for pre_vote in (True, False):
        follower.step(RequestVote(3, 2, term + 1, last + 5, last_term + 1, pre_vote))
        answers = [m for m in _drain_messages(follower) if isinstance(m, RequestVoteResponse)]
        assert answers
        assert not any(m.granted for m in answers)
    assert follower.vote != 3


def test_a_stalled_node_ignores_timeout_now() -> None:
    c = Cluster(3)
    c.elect(1)
    follower = c.core(2)
    term = follower.term
    follower.set_storage_stalled(True)
    follower.step(TimeoutNow(1, 2, term))
    assert follower.role is Role.FOLLOWER
    assert follower.term == term


def test_a_stalled_candidate_steps_down_and_late_votes_do_not_elect_it() -> None:
    core = RaftCore(RaftConfig(1, (1, 2, 3), pre_vote=False), random.Random(0))
    while core.role is not Role.CANDIDATE:
        core.tick()
    core.advance(core.ready())  # its term and vote are stored
    core.set_storage_stalled(True)
    assert core.soft_state.role is Role.FOLLOWER
    core.step(RequestVoteResponse(2, 1, core.term, True, False))
    core.step(RequestVoteResponse(3, 1, core.term, True, False))
    assert core.soft_state.role is Role.FOLLOWER


def test_a_node_whose_stall_cleared_can_lead_again() -> None:
    c = Cluster(3)
    c.elect(1)
    c.core(1).set_storage_stalled(True)
    c.tick(times=3 * c.core(1).config.election_ticks_max)
    c.core(1).set_storage_stalled(False)
    assert not c.core(1).storage_stalled
    c.core(c.leaders()[0]).transfer_leadership(1)
    c.stabilize()
    assert c.leaders() == [1]


def test_match_indexes_name_each_followers_progress_on_a_leader_only() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    index = c.core(1).propose(b"x")
    c.stabilize()
    matches = c.core(1).match_indexes()
    assert matches[2] == index
    assert matches[3] < index
    assert set(matches) == {2, 3}
    assert c.core(2).match_indexes() == {}


def _drain_messages(core: RaftCore) -> list[object]:
    out: list[object] = []
    while core.has_ready():
        rd = core.ready()
        out.extend(rd.messages)
        core.advance(rd)
    return out
