"""In-memory storage for the simulator and tests: every call is "durable" at once."""

from __future__ import annotations

from collections.abc import Sequence

from control.raft.storage import append_offset
from control.raft.types import Entry, HardState, Snapshot


class MemoryStorage:
    """Implements :class:`~control.raft.storage.Storage` with plain attributes."""

    __slots__ = ("_base", "_entries", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._base = 0
        self._entries: list[Entry] = []
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None

    def first_index(self) -> int:
        return self._base + 1

    def load_entries(self) -> list[Entry]:
        return list(self._entries)

    def append(self, entries: Sequence[Entry]) -> None:
        del self._entries[append_offset(self._base, self._entries, entries) :]
        self._entries.extend(entries)

    def compact(self, through: int) -> None:
        if through > self._base:
            del self._entries[: through - self._base]
            self._base = through

    def reset(self, index: int) -> None:
        self._base = index
        self._entries = []

    def load_hard_state(self) -> HardState:
        return self._hard_state

    def save_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def load_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    @property
    def last_index(self) -> int:
        return self._base + len(self._entries)

    @property
    def last_term(self) -> int:
        if self._entries:
            return self._entries[-1].term
        return self._snapshot.term if self._snapshot is not None else 0

    def term_at(self, index: int) -> int | None:
        """The stored term at ``index``, or None if not stored in the log."""
        offset = index - self._base
        return self._entries[offset - 1].term if 0 < offset <= len(self._entries) else None
