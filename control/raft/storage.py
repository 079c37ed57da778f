"""The durable storage seam and the one place that orders writes for a Ready.

Every mutating call must be durable (fsynced) when it returns: callers send messages and
acknowledge clients right after it. The one exception, :class:`BufferedAppend`, says so in
its name and leaves the flush to its caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from control.raft.errors import StorageError
from control.raft.ready import Compaction, Ready
from control.raft.types import Entry, HardState, PersistentState, Snapshot


class LogStore(Protocol):
    def first_index(self) -> int:
        """The index of the first stored entry, or of the next append if there is none."""
        ...

    def load_entries(self) -> list[Entry]:
        """Every stored entry, in index order, starting at :meth:`first_index`."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Stores contiguous ``entries``; stored entries from ``entries[0].index`` on are
        replaced. ``entries[0].index`` is at most the last stored index + 1."""
        ...

    def compact(self, through: int) -> None:
        """Drops entries with index ``<= through``."""
        ...

    def reset(self, index: int) -> None:
        """Drops every entry; the next append starts at ``index + 1``."""
        ...


class StableStore(Protocol):
    def load_hard_state(self) -> HardState: ...

    def save_hard_state(self, hard_state: HardState) -> None: ...


class SnapshotStore(Protocol):
    def load_snapshot(self) -> Snapshot | None:
        """The latest saved snapshot, if any."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...


class Storage(LogStore, StableStore, SnapshotStore, Protocol):
    """Everything a node keeps durably."""


@runtime_checkable
class BufferedAppend(Protocol):
    """A log whose append can leave its flush to the caller, who can then run the flush
    without blocking (control.aio_sync)."""

    def append_buffered(self, entries: Sequence[Entry]) -> int | None:
        """Does what :meth:`LogStore.append` does except the fsync, and returns the file
        descriptor whose fdatasync makes ``entries`` durable. None, with nothing changed,
        where the append needs a slower step first (growing the log's reserved space)."""
        ...


def append_offset(base: int, stored: Sequence[Entry], entries: Sequence[Entry]) -> int:
    """Where `entries` start in a log holding `stored` after `base`: every store replaces
    stored entries from there on. ValueError if the append would leave a gap."""
    first = entries[0].index
    if not base < first <= base + len(stored) + 1:
        raise ValueError(f"append at {first} leaves a gap after {base + len(stored)}")
    return first - base - 1


def load_state(storage: Storage) -> PersistentState:
    """Reads what a core needs to restart.

    A crash between saving a leader's snapshot and resetting the log leaves a log that does
    not continue the snapshot; that log is reset here, as persisting the Ready would have.
    """
    snapshot = storage.load_snapshot()
    entries = storage.load_entries()
    if snapshot is not None:
        first, s = storage.first_index(), snapshot.index
        if first > s + 1:
            raise StorageError(f"log starts at {first}, after snapshot {s} + 1")
        if s >= first + len(entries) or (s >= first and entries[s - first].term != snapshot.term):
            storage.reset(s)
            entries = []
    return PersistentState(storage.load_hard_state(), snapshot, tuple(entries))


def persist_ready(storage: Storage, ready: Ready) -> None:
    """Persists a Ready: snapshot, then entries, then hard state.

    This order keeps the stored commit index within the stored log after a crash at any
    point; a snapshot saved without the log reset that follows it is repaired on restart.
    """
    if ready.snapshot is not None:
        storage.save_snapshot(ready.snapshot)
        storage.reset(ready.snapshot.index)
    if ready.entries:
        storage.append(ready.entries)
    if ready.hard_state is not None:
        storage.save_hard_state(ready.hard_state)


def persist_compaction(storage: Storage, compaction: Compaction) -> None:
    """Persists a local snapshot before dropping the entries it replaces."""
    storage.save_snapshot(compaction.snapshot)
    storage.compact(compaction.log_through)
