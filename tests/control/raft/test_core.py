"""Unit behaviour of RaftCore through its public inputs and Ready output."""

from __future__ import annotations

import random

import pytest

from control.raft.config import RaftConfig
from control.raft.core import RaftCore
from control.raft.errors import NotLeader, RequestDropped
from control.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from control.raft.ready import Ready
from control.raft.types import Entry, EntryKind, HardState, PersistentState, ReadState, Role
from tests.control.raft.harness import Cluster, log_of


def _core(node_id: int = 1, peers: tuple[int, ...] = (1, 2, 3), seed: int = 0,
          state: PersistentState | None = None, **config: object) -> RaftCore:
    return RaftCore(RaftConfig(node_id, peers, **config), random.Random(seed), state)  # type: ignore[arg-type]


def _drain(core: RaftCore) -> list[Message]:
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out.extend(rd.messages)
        core.advance(rd)
    return out


def test_single_node_elects_itself_and_commits_its_noop() -> None:
    core = _core(peers=(1,))
    for _ in range(20):
        core.tick()
    assert core.role is Role.LEADER
    assert core.term == 1
    rd = core.ready()
    assert rd.entries == (Entry(1, 1, EntryKind.NOOP, b""),)
    # Committed only once its one copy is on disk.
    assert rd.hard_state == HardState(1, 1, 0)
    assert rd.committed_entries == ()
    core.advance(rd)
    rd2 = core.ready()
    assert rd2.hard_state == HardState(1, 1, 1)
    assert rd2.committed_entries == rd.entries
    core.advance(rd2)
    assert core.propose(b"x") == 2


def _leader_with_write_in_flight() -> tuple[RaftCore, Ready]:
    """A settled 3-node leader that proposed one entry and is still persisting it."""
    c = Cluster(3)
    c.elect(1)
    c.stabilize()
    leader = c.core(1)
    index = leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries[-1].index == index
    return leader, rd


def test_leader_counts_its_own_entry_only_once_durable() -> None:
    leader, rd = _leader_with_write_in_flight()
    index = rd.entries[-1].index
    leader.step(AppendEntriesResponse(2, 1, leader.term, True, index))
    assert leader.commit_index == index - 1
    leader.advance(rd)
    assert leader.commit_index == index


def test_leader_commits_before_its_own_write_once_a_majority_of_others_has_it() -> None:
    leader, rd = _leader_with_write_in_flight()
    index = rd.entries[-1].index
    for follower in (2, 3):
        leader.step(AppendEntriesResponse(follower, 1, leader.term, True, index))
    assert leader.commit_index == index


def test_leader_heartbeats_flow_while_its_write_is_in_flight() -> None:
    leader, rd = _leader_with_write_in_flight()
    leader.step(AppendEntriesResponse(2, 1, leader.term, True, rd.entries[-1].index))
    for _ in range(leader.config.heartbeat_ticks):
        leader.tick()
    beats = [m for m in leader.take_messages() if isinstance(m, Heartbeat)]
    assert sorted(m.to for m in beats) == [2, 3]
    # Follower 2 has the entry, but only two disks would: no heartbeat may claim it.
    assert all(m.commit < rd.entries[-1].index for m in beats)
    assert leader.take_messages() == ()


def test_a_leader_sends_early_only_once_its_term_and_vote_are_stored() -> None:
    core = _core(pre_vote=False)
    while core.role is not Role.CANDIDATE:
        core.tick()
    campaign = core.ready()
    assert campaign.hard_state == HardState(1, 1, 0)
    core.step(RequestVoteResponse(2, 1, 1, True, False))
    assert core.role is Role.LEADER
    assert core.take_messages() == ()
    core.advance(campaign)
    assert {type(m) for m in core.take_messages()} == {AppendEntries}


def test_a_follower_sends_only_heartbeat_answers_early() -> None:
    follower = _core(node_id=2)
    follower.step(Heartbeat(1, 2, 1, 0, 1))
    assert follower.take_messages() == ()  # its new term is not stored yet
    first = follower.ready()
    follower.advance(first)
    follower.step(AppendEntries(1, 2, 1, 0, 0, tuple(log_of([1])), 0))
    appended = follower.ready()  # being persisted
    follower.step(Heartbeat(1, 2, 1, 0, 2))
    follower.step(AppendEntries(1, 2, 1, 1, 1, tuple(log_of([1, 1]))[1:], 0))
    assert follower.take_messages() == (HeartbeatResponse(2, 1, 1, 2),)
    follower.advance(appended)
    # The append's answer promises the entry is on disk: it waits for the next Ready.
    assert [type(m) for m in follower.ready().messages] == [AppendEntriesResponse]


def test_election_timeout_is_drawn_from_the_injected_rng() -> None:
    def first_campaign_tick(seed: int) -> int:
        core = _core(seed=seed, pre_vote=False)
        for t in range(1, 100):
            core.tick()
            if core.role is Role.CANDIDATE:
                return t
        raise AssertionError("never campaigned")

    ticks = [first_campaign_tick(s) for s in range(30)]
    assert all(10 <= t < 20 for t in ticks)
    assert len(set(ticks)) > 3
    assert ticks == [first_campaign_tick(s) for s in range(30)]


def test_vote_is_in_the_same_ready_as_the_reply_that_depends_on_it() -> None:
    core = _core(node_id=2)
    core.step(RequestVote(1, 2, 5, 0, 0))
    rd = core.ready()
    assert rd.hard_state == HardState(5, 1, 0)
    assert rd.messages == (RequestVoteResponse(2, 1, 5, True),)


def test_one_vote_per_term_and_stale_logs_are_refused() -> None:
    state = PersistentState(HardState(2, None, 0), None, tuple(log_of([1, 2])))
    core = _core(node_id=2, state=state)
    core.step(RequestVote(1, 2, 3, 2, 1))
    core.step(RequestVote(3, 2, 3, 1, 2))
    assert core.vote is None
    core.step(RequestVote(3, 2, 3, 5, 2))
    core.step(RequestVote(1, 2, 3, 9, 9))
    replies = [m for m in _drain(core) if isinstance(m, RequestVoteResponse)]
    assert [m.granted for m in replies] == [False, False, True, False]
    assert core.vote == 3


def test_pre_vote_changes_no_term_or_vote() -> None:
    core = _core(node_id=2)
    core.step(RequestVote(1, 2, 7, 0, 0, pre_vote=True))
    assert (core.term, core.vote) == (0, None)
    assert _drain(core) == [RequestVoteResponse(2, 1, 7, True, True)]


def test_follower_in_lease_ignores_disruptive_votes() -> None:
    core = _core(node_id=2)
    core.step(Heartbeat(1, 2, 1, 0, 1))
    _drain(core)
    core.step(RequestVote(3, 2, 2, 10, 1))
    assert core.term == 1
    assert _drain(core) == []


def test_follower_refuses_client_requests_naming_the_leader() -> None:
    core = _core(node_id=2)
    core.step(Heartbeat(1, 2, 1, 0, 1))
    for call in (lambda: core.propose(b"x"), lambda: core.read_index(b"r"),
                 lambda: core.transfer_leadership(3)):
        with pytest.raises(NotLeader) as err:
            call()
        assert err.value.leader == 1


def test_duplicate_append_does_not_truncate_newer_entries() -> None:
    state = PersistentState(HardState(1, 1, 0), None, tuple(log_of([1, 1, 1])))
    core = _core(node_id=2, state=state)
    core.step(AppendEntries(1, 2, 1, 0, 0, tuple(log_of([1])), 0))
    assert core.last_index == 3
    _drain(core)
    core.step(AppendEntries(1, 2, 2, 1, 1, (Entry(2, 2),), 0))
    assert core.last_index == 2
    assert core.term_at(2) == 2


def test_rejection_carries_a_hint_that_skips_a_term() -> None:
    state = PersistentState(HardState(3, None, 0), None, tuple(log_of([1, 3, 3, 3, 3])))
    core = _core(node_id=2, state=state)
    core.step(AppendEntries(1, 2, 4, 5, 4, (), 0))
    [reply] = _drain(core)
    assert reply == AppendEntriesResponse(2, 1, 4, False, 5, hint_index=5, hint_term=3)
    core.step(AppendEntries(1, 2, 4, 5, 2, (), 0))
    [reply] = _drain(core)
    assert isinstance(reply, AppendEntriesResponse)
    assert (reply.hint_index, reply.hint_term) == (1, 1)


def test_leader_ignores_stale_and_reordered_responses() -> None:
    c = Cluster(3)
    c.elect(1)
    leader = c.core(1)
    for n in range(3):
        leader.propose(b"%d" % n)
    c.stabilize()
    commit = leader.commit_index
    leader.step(AppendEntriesResponse(2, 1, leader.term, True, 1))
    leader.step(AppendEntriesResponse(2, 1, leader.term, False, 1, 0, 0))
    leader.step(AppendEntriesResponse(2, 1, leader.term - 1, False, 0))
    assert leader.role is Role.LEADER
    assert leader.commit_index == commit
    assert [m for m in _drain(leader) if isinstance(m, AppendEntries)] == []


def test_commit_never_passes_a_followers_log_on_heartbeat() -> None:
    core = _core(node_id=2, state=PersistentState(HardState(1), None, tuple(log_of([1]))))
    core.step(Heartbeat(1, 2, 1, 5, 1))
    assert core.commit_index == 1


def test_read_index_waits_for_a_commit_in_term_and_a_quorum_heartbeat() -> None:
    c = Cluster(3)
    c.elect(1, drop=lambda m: isinstance(m, AppendEntriesResponse))
    leader = c.core(1)
    assert leader.commit_index == 0
    leader.read_index(b"early")
    c.stabilize(drop=lambda m: isinstance(m, AppendEntriesResponse | HeartbeatResponse))
    assert c.read_states[1] == []
    c.tick((1,), times=leader.config.heartbeat_ticks)
    assert c.read_states[1] == [ReadState(b"early", 1)]
    leader.read_index(b"later")
    c.stabilize()
    assert c.read_states[1][-1] == ReadState(b"later", 1)


def test_deposed_leader_never_answers_a_read() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(1)
    c.core(1).read_index(b"r")
    c.tick((2, 3), times=60)
    new_leader = [i for i in c.leaders() if i != 1]
    assert len(new_leader) == 1
    c.core(new_leader[0]).propose(b"write")
    c.stabilize()
    c.heal()
    c.tick(times=30)
    assert c.read_states[1] == []
    assert c.core(1).role is Role.FOLLOWER


def test_leadership_transfer_refuses_proposals_then_hands_over() -> None:
    c = Cluster(3)
    c.elect(1)
    term = c.core(1).term
    c.core(1).transfer_leadership(3)
    with pytest.raises(RequestDropped):
        c.core(1).propose(b"x")
    c.stabilize()
    assert c.core(3).role is Role.LEADER
    assert c.core(3).term == term + 1
    assert c.core(1).role is Role.FOLLOWER


def test_proposals_beyond_the_uncommitted_limit_are_dropped() -> None:
    c = Cluster(3, max_uncommitted_entries=3)
    c.elect(1)
    c.isolate(1)
    for n in range(3):
        c.core(1).propose(b"%d" % n)
    with pytest.raises(RequestDropped):
        c.core(1).propose(b"too many")


def test_ready_must_be_advanced_before_the_next() -> None:
    core = _core()
    core.step(Heartbeat(2, 1, 1, 0, 1))
    rd = core.ready()
    assert not core.has_ready()
    with pytest.raises(RuntimeError):
        core.ready()
    core.advance(rd)
    with pytest.raises(RuntimeError):
        core.advance(rd)


def test_restart_recovers_term_vote_and_commit() -> None:
    c = Cluster(3)
    c.elect(1)
    c.core(1).propose(b"x")
    c.stabilize()
    c.tick(times=2)
    before = (c.core(2).term, c.core(2).vote, c.core(2).commit_index)
    c.restart(2)
    assert (c.core(2).term, c.core(2).vote, c.core(2).commit_index) == before
    assert c.nodes[2].sm.index == 0
    c.tick(times=2)
    assert c.nodes[2].sm.index == c.nodes[1].sm.index == 2


def test_compact_keeps_trailing_entries_and_validates_index() -> None:
    c = Cluster(1, snapshot_threshold=1000, snapshot_trailing=2)
    c.elect(1)
    for n in range(5):
        c.core(1).propose(b"%d" % n)
    c.stabilize()
    core = c.core(1)
    with pytest.raises(ValueError, match="outside"):
        core.compact(core.applied_index + 1, b"")
    compaction = core.compact(5, b"s")
    assert (compaction.snapshot.index, compaction.log_through) == (5, 3)
    assert core.first_index == 4
    assert core.snapshot == compaction.snapshot


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(ValueError, match="not among peers"):
        RaftConfig(4, (1, 2, 3))
    with pytest.raises(ValueError, match="heartbeat_ticks"):
        RaftConfig(1, (1, 2, 3), heartbeat_ticks=10)
