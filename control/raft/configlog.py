"""The configurations a core's log holds: its snapshot's (or the bootstrap one) and one per
``EntryKind.CONFIG`` entry after it.

A server uses the newest configuration in its log, committed or not (Raft dissertation
§4.1, as LogCabin and hashicorp/raft do; etcd's raft switches only when it applies the
entry). So a change counts for quorums from the moment it is appended, on every server
that has it, and is undone if the entry is replaced by a new leader's log.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from control.raft.membership import Membership
from control.raft.types import Entry, EntryKind


class ConfigLog:
    """Invariant: ``_entries`` holds (index, term, configuration) of the CONFIG entries
    above ``base_index`` that are in the log now, in index order."""

    __slots__ = ("_base", "_base_index", "_entries")

    def __init__(self, base: Membership, base_index: int, entries: Iterable[Entry] = ()) -> None:
        self._base = base
        self._base_index = base_index
        self._entries: list[tuple[int, int, Membership]] = []
        self.observe(entries)

    @property
    def current(self) -> Membership:
        """The newest configuration in the log."""
        return self._entries[-1][2] if self._entries else self._base

    @property
    def current_index(self) -> int:
        """The index of the newest configuration entry (the snapshot's index if none)."""
        return self._entries[-1][0] if self._entries else self._base_index

    def at(self, index: int) -> Membership:
        """The configuration in force at ``index`` (the newest at or below it)."""
        pos = bisect.bisect_right(self._entries, index, key=lambda e: e[0])
        return self._entries[pos - 1][2] if pos else self._base

    def observe(self, entries: Iterable[Entry]) -> None:
        """Records configuration entries just appended to the log."""
        for e in entries:
            if e.kind is EntryKind.CONFIG and e.index > self.current_index:
                self._entries.append((e.index, e.term, Membership.from_bytes(e.data)))

    def forget_replaced(self, term_at: Callable[[int], int | None]) -> None:
        """Drops configurations whose entries the log no longer holds (a new leader's
        entries replaced them): the configuration reverts to the one before."""
        while self._entries and term_at(self._entries[-1][0]) != self._entries[-1][1]:
            self._entries.pop()

    def compact(self, index: int) -> None:
        """Folds the configurations at or below ``index`` (a new snapshot's) into the base."""
        self._base = self.at(index)
        self._base_index = max(self._base_index, index)
        self._entries = [e for e in self._entries if e[0] > index]

    def reset(self, base: Membership, index: int) -> None:
        """Replaces everything with a leader's snapshot's configuration."""
        self._base, self._base_index, self._entries = base, index, []
