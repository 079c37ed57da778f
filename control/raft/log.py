"""The in-memory Raft log of one core: a snapshot base followed by contiguous entries."""

from __future__ import annotations

from collections.abc import Sequence

from control.raft.types import Entry, Snapshot


class LogSafetyError(AssertionError):
    """The core was asked to break a log invariant; this is a bug, never a runtime condition."""


class RaftLog:
    """Entries ``base+1 .. last_index`` plus the term of ``base``.

    Invariants: entries are contiguous and their terms never decrease; ``base`` is at most
    the latest snapshot's index; entries at or below ``unstable_from - 1`` have been handed
    to the driver for persistence; entries at or below ``durable_index`` are on disk exactly
    as they are here.
    """

    __slots__ = ("_base", "_base_term", "_durable", "_entries", "_unstable_from", "snapshot")

    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry]) -> None:
        self.snapshot = snapshot
        self._base = snapshot.index if snapshot else 0
        self._base_term = snapshot.term if snapshot else 0
        self._entries = list(_after_base(self._base, self._base_term, entries))
        self._unstable_from = self.last_index + 1
        self._durable = self.last_index

    @property
    def base(self) -> int:
        return self._base

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    @property
    def last_index(self) -> int:
        return self._base + len(self._entries)

    @property
    def durable_index(self) -> int:
        return self._durable

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._base_term

    def term_at(self, index: int) -> int | None:
        """The term of ``index``, or None when it is compacted away or beyond the end."""
        offset = index - self._base
        if offset == 0:
            return self._base_term
        if 0 < offset <= len(self._entries):
            return self._entries[offset - 1].term
        return None

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with ``lo <= index < hi``; ``lo`` must be above ``base``."""
        if lo <= self._base:
            raise LogSafetyError(f"entry {lo} is compacted (base {self._base})")
        return tuple(self._entries[lo - self._base - 1 : hi - self._base - 1])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate's log is at least as up to date as this one (Raft §5.4.1)."""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest ``i <= index`` whose term is at most ``term``, stopping at ``base``."""
        i = min(index, self.last_index)
        while i > self._base and self._entries[i - self._base - 1].term > term:
            i -= 1
        return i

    def append(self, entry: Entry) -> None:
        """Appends a leader's new entry at ``last_index + 1``."""
        if entry.index != self.last_index + 1 or entry.term < self.last_term:
            raise LogSafetyError(f"cannot append {entry.index} after {self.last_index}")
        self._entries.append(entry)

    def maybe_append(
        self, prev_index: int, prev_term: int, entries: Sequence[Entry], commit: int
    ) -> int | None:
        """Follower side of AppendEntries.

        Returns the index of the last entry the message proves matches the leader, or None
        if the log has no (``prev_index``, ``prev_term``). Existing entries are replaced only
        from the first real conflict, so a stale or duplicated message never truncates.
        """
        if self.term_at(prev_index) != prev_term:
            return None
        for pos, entry in enumerate(entries):
            mine = self.term_at(entry.index)
            if mine == entry.term:
                continue
            if mine is not None:
                if entry.index <= commit:
                    raise LogSafetyError(f"conflict at committed index {entry.index}")
                del self._entries[entry.index - self._base - 1 :]
                self._unstable_from = min(self._unstable_from, entry.index)
                self._durable = min(self._durable, entry.index - 1)
            self._entries.extend(entries[pos:])
            break
        return prev_index + len(entries)

    def take_unstable(self) -> tuple[Entry, ...]:
        """Entries not yet handed out for persistence; marks them handed out."""
        lo = self._unstable_from
        self._unstable_from = self.last_index + 1
        if lo > self.last_index:
            return ()
        return tuple(self._entries[lo - self._base - 1 :])

    def has_unstable(self) -> bool:
        return self._unstable_from <= self.last_index

    def mark_durable(self, index: int, term: int) -> None:
        """Records that the driver persisted entries through (``index``, ``term``).

        Ignored when the log no longer holds that entry: it was replaced while being
        written, and its replacement is not durable until its own write completes. Entries
        with the same index and term are the same entry, so the term check suffices.
        """
        if self.term_at(index) == term:
            self._durable = max(self._durable, index)

    def compact(self, snapshot: Snapshot, through: int) -> None:
        """Records a local snapshot and drops entries up to ``through``."""
        if not self._base <= through <= snapshot.index <= self.last_index:
            raise LogSafetyError(f"bad compaction through {through} for snapshot {snapshot.index}")
        term = self.term_at(through)
        assert term is not None
        self._base_term = term
        del self._entries[: through - self._base]
        self._base = through
        self.snapshot = snapshot

    def install(self, snapshot: Snapshot) -> None:
        """Replaces the whole log with a leader's snapshot."""
        self._durable = min(self._durable, self._base)
        self.snapshot = snapshot
        self._base = snapshot.index
        self._base_term = snapshot.term
        self._entries = []
        self._unstable_from = snapshot.index + 1


def _after_base(base: int, base_term: int, entries: Sequence[Entry]) -> Sequence[Entry]:
    """The recovered entries that follow the snapshot, checked to continue it."""
    if entries and entries[0].index <= base:
        at = base - entries[0].index
        if at < len(entries) and entries[at].term != base_term:
            raise ValueError(f"recovered log diverges from the snapshot at index {base}")
        entries = entries[at + 1 :]
    expected, term = base + 1, base_term
    for entry in entries:
        if entry.index != expected or entry.term < term:
            raise ValueError(f"recovered log is not contiguous at index {entry.index}")
        expected, term = expected + 1, entry.term
    return entries
