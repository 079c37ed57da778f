"""The in-memory log's matching, conflict and compaction rules."""

from __future__ import annotations

import pytest

from control.raft.log import LogSafetyError, RaftLog
from control.raft.types import Entry, Snapshot
from tests.control.raft.harness import log_of


def test_stale_append_never_truncates() -> None:
    log = RaftLog(None, log_of([1, 1, 2]))
    assert log.maybe_append(0, 0, log_of([1, 1]), commit=0) == 2
    assert log.last_index == 3


def test_conflict_truncates_from_the_first_differing_entry() -> None:
    log = RaftLog(None, log_of([1, 1, 2, 2]))
    assert log.maybe_append(1, 1, (Entry(2, 1), Entry(3, 3)), commit=1) == 3
    assert [log.term_at(i) for i in (1, 2, 3, 4)] == [1, 1, 3, None]
    assert [e.index for e in log.take_unstable()] == [3]


def test_conflict_below_commit_is_refused() -> None:
    log = RaftLog(None, log_of([1, 1, 2]))
    with pytest.raises(LogSafetyError, match="committed"):
        log.maybe_append(1, 1, (Entry(2, 3),), commit=2)


def test_mismatched_prev_is_rejected() -> None:
    log = RaftLog(None, log_of([1, 1]))
    assert log.maybe_append(2, 2, (), commit=0) is None
    assert log.maybe_append(5, 1, (), commit=0) is None


def test_find_conflict_by_term_skips_a_whole_term() -> None:
    log = RaftLog(None, log_of([1, 1, 3, 3, 3, 5]))
    assert log.find_conflict_by_term(6, 4) == 5
    assert log.find_conflict_by_term(6, 2) == 2
    assert log.find_conflict_by_term(99, 9) == 6


def test_restore_drops_entries_covered_by_the_snapshot() -> None:
    log = RaftLog(Snapshot(2, 1, b""), log_of([1, 1, 2]))
    assert (log.base, log.last_index, log.term_at(2), log.term_at(1)) == (2, 3, 1, None)


@pytest.mark.parametrize(
    ("snapshot", "terms", "error"),
    [
        (Snapshot(2, 2, b""), [1, 1, 2], "diverges"),
        (None, [2, 1], "not contiguous"),
        (Snapshot(1, 1, b""), [], None),
    ],
)
def test_restore_validates_the_recovered_log(
    snapshot: Snapshot | None, terms: list[int], error: str | None
) -> None:
    if error is None:
        assert RaftLog(snapshot, log_of(terms)).last_index == 1
    else:
        with pytest.raises(ValueError, match=error):
            RaftLog(snapshot, log_of(terms))


def test_compact_keeps_the_term_of_the_new_base() -> None:
    log = RaftLog(None, log_of([1, 2, 2, 3]))
    log.take_unstable()
    log.compact(Snapshot(3, 2, b""), through=2)
    assert (log.base, log.term_at(2), log.term_at(1), log.snapshot_index) == (2, 2, None, 3)
    with pytest.raises(LogSafetyError):
        log.slice(2, 4)
