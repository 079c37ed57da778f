"""Each checker fails on the history it exists to reject, and passes a sound one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from control.raft.checkers import DurableLog, NodeView, SafetyChecker, Violation, chain_digest
from control.raft.types import Entry, NodeId, Role


def _view(node: NodeId, term: int, role: Role = Role.FOLLOWER, commit: int = 0,
          applied: int = 0, terms: Sequence[int] = (), incarnation: int = 0) -> NodeView:
    log = dict(enumerate(terms, 1))
    return NodeView(node, incarnation, term, role, commit, applied, 1, log.get)


def _durable(node: NodeId, terms: Sequence[int]) -> DurableLog:
    log = dict(enumerate(terms, 1))
    return DurableLog(node, len(terms), terms[-1] if terms else 0, 0, log.get)


def _no_logs() -> list[DurableLog]:
    return []


def test_two_leaders_in_one_term() -> None:
    c = SafetyChecker(quorum=2)
    c.after_step([_view(1, 3, Role.LEADER)], _no_logs)
    with pytest.raises(Violation, match="election safety"):
        c.after_step([_view(2, 3, Role.LEADER)], _no_logs)


def test_same_index_and_term_with_different_data() -> None:
    c = SafetyChecker(quorum=2)
    c.on_persist(1, [Entry(1, 1, data=b"a")], 0)
    with pytest.raises(Violation, match="log matching"):
        c.on_persist(2, [Entry(1, 1, data=b"b")], 0)


def test_same_entry_after_different_predecessors() -> None:
    c = SafetyChecker(quorum=2)
    c.on_persist(1, [Entry(2, 3)], 1)
    c.on_persist(2, [Entry(2, 3)], None)
    with pytest.raises(Violation, match="log matching"):
        c.on_persist(3, [Entry(2, 3)], 2)


def test_applied_sequences_must_share_one_history() -> None:
    c = SafetyChecker(quorum=2)
    c.on_apply(1, Entry(1, 1, data=b"a"))
    c.on_apply(2, Entry(1, 1, data=b"a"))
    with pytest.raises(Violation, match="state machine safety"):
        c.on_apply(3, Entry(1, 2, data=b"other"))
    with pytest.raises(Violation, match="beyond history"):
        c.on_apply(3, Entry(3, 1))


def test_restored_snapshot_must_match_history() -> None:
    c = SafetyChecker(quorum=2)
    e = Entry(1, 1, data=b"a")
    c.on_apply(1, e)
    c.on_restore(2, 1, chain_digest(b"", e))
    with pytest.raises(Violation, match="snapshot"):
        c.on_restore(2, 1, b"forged")


def test_acknowledgement_needs_a_durable_quorum_and_must_stay_durable() -> None:
    c = SafetyChecker(quorum=2)
    with pytest.raises(Violation, match="durable acknowledgement"):
        c.on_ack(Entry(1, 1), durable_copies=1)
    c.on_ack(Entry(1, 1), durable_copies=2)
    c.check_acked_durable(lambda e: 2)
    with pytest.raises(Violation, match="lost"):
        c.check_acked_durable(lambda e: 1)


def test_read_must_cover_acknowledged_writes() -> None:
    c = SafetyChecker(quorum=2)
    c.on_read(1, index=5, required=5)
    with pytest.raises(Violation, match="linearizable read"):
        c.on_read(1, index=4, required=5)


def test_indexes_never_go_backwards_within_an_incarnation() -> None:
    c = SafetyChecker(quorum=2)
    c.after_step([_view(1, 1, commit=2, applied=2, terms=[1, 1])], _no_logs)
    restarted = _view(1, 1, commit=0, applied=0, terms=[1, 1], incarnation=1)
    c.after_step([restarted], _no_logs)
    c.after_step([_view(1, 1, commit=1, applied=1, terms=[1, 1], incarnation=1)], _no_logs)
    with pytest.raises(Violation, match="monotonic"):
        c.after_step([restarted], _no_logs)
    c.on_durable_commit(2, 3)
    with pytest.raises(Violation, match="durable commit"):
        c.on_durable_commit(2, 2)


def test_new_leader_must_hold_entries_committed_in_earlier_terms() -> None:
    c = SafetyChecker(quorum=2)
    logs = [_durable(1, [1, 1]), _durable(2, [1, 1]), _durable(3, [1])]
    c.after_step([_view(1, 1, Role.LEADER, commit=2, terms=[1, 1])], lambda: logs)
    with pytest.raises(Violation, match="leader completeness"):
        c.after_step([_view(3, 2, Role.LEADER, terms=[1, 2])], lambda: logs)


def test_committed_entry_must_be_out_of_reach_of_electable_nodes() -> None:
    """Figure 8: 2@2 is on S1-S3 but S5 (with 2@3) can still win S2-S4's votes."""
    c = SafetyChecker(quorum=3)
    logs = [_durable(1, [1, 2, 4]), _durable(2, [1, 2]), _durable(3, [1, 2]),
            _durable(4, [1]), _durable(5, [1, 3])]
    with pytest.raises(Violation, match="node 5 lacks committed entry 2@2 yet could win 4"):
        c.after_step([_view(1, 4, Role.LEADER, commit=2, terms=[1, 2, 4])], lambda: logs)


def test_committed_entry_protected_by_the_election_restriction_passes() -> None:
    c = SafetyChecker(quorum=3)
    logs = [_durable(1, [1, 2, 4]), _durable(2, [1, 2, 4]), _durable(3, [1, 2, 4]),
            _durable(4, [1]), _durable(5, [1, 3])]
    c.after_step([_view(1, 4, Role.LEADER, commit=3, terms=[1, 2, 4])], lambda: logs)
