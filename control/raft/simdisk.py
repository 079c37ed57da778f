"""The asynchronous simulator's disk: in-memory storage whose writes land only when the
simulator says so, and which fails the way a disk does.

A persist is the sequence of storage calls :func:`~control.raft.storage.persist_ready` (or
``persist_compaction``) makes, recorded as :class:`Write` values by :func:`planned_writes`
instead of being carried out. Each call is durable (written and fsynced) when it returns,
so a crash part-way through a persist leaves the calls before it durable, the call in
progress written to the page cache but not yet synced, and the calls after it not started.
What was only in the page cache may survive a crash whole, vanish, or (an append, one
record per entry as far as the contract goes) survive as a prefix: :meth:`SimDisk.crash`.
A write error (ENOSPC, EIO on write or fsync) leaves its call in that same unsynced state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.raft.errors import StorageError
from control.raft.memstore import MemoryStorage
from control.raft.storage import Storage
from control.raft.types import Entry, HardState, Snapshot

WriteCall = Callable[[Storage], None]


@dataclass(frozen=True, slots=True)
class Write:
    """One mutating storage call: ``name`` is the :class:`Storage` method, ``arg`` its argument."""

    name: str
    arg: Sequence[Entry] | int | HardState | Snapshot

    def apply(self, storage: MemoryStorage) -> None:
        getattr(storage, self.name)(self.arg)


class _WriteRecorder:
    """A Storage whose reads see ``stored`` and whose writes are recorded, not carried out."""

    def __init__(self, stored: MemoryStorage) -> None:
        self._stored = stored
        self.writes: list[Write] = []

    def first_index(self) -> int:
        return self._stored.first_index()

    def load_entries(self) -> list[Entry]:
        return self._stored.load_entries()

    def append(self, entries: Sequence[Entry]) -> None:
        self.writes.append(Write("append", tuple(entries)))

    def compact(self, through: int) -> None:
        self.writes.append(Write("compact", through))

    def reset(self, index: int) -> None:
        self.writes.append(Write("reset", index))

    def load_hard_state(self) -> HardState:
        return self._stored.load_hard_state()

    def save_hard_state(self, hard_state: HardState) -> None:
        self.writes.append(Write("save_hard_state", hard_state))

    def load_snapshot(self) -> Snapshot | None:
        return self._stored.load_snapshot()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.writes.append(Write("save_snapshot", snapshot))


def planned_writes(stored: MemoryStorage, persist: WriteCall) -> tuple[Write, ...]:
    """The storage calls ``persist`` would make, in order, without making them."""
    recorder = _WriteRecorder(stored)
    persist(recorder)
    return tuple(recorder.writes)


@dataclass(slots=True)
class WritePlan:
    """How the simulator lets one persist end, drawn when it starts."""

    done_at: int | None
    """The tick its last fsync returns; None while the disk hangs (until the run heals)."""
    fails_at: int | None = None
    """The index of the write that fails; None when every write succeeds."""
    error: str = ""
    """What the failing write raises (ENOSPC, EIO on write or on fsync)."""


class SimDisk:
    """A node's disk. ``storage`` is what survives a crash; ``stored`` is told of every write
    just before it lands there (so it can compare with what was stored before)."""

    def __init__(self, storage: MemoryStorage, stored: Callable[[Write], None]) -> None:
        self.storage = storage
        self._stored = stored
        self.failing_until = 0
        """While the tick is below this, opening fails: a disk that is full or erroring."""
        self.rotted = False
        """Bit rot was found: the records' checksums refuse it on every open."""

    def open(self, now: int) -> MemoryStorage:
        """The storage to restart from, or StorageError as a failing or rotten disk gives."""
        if self.rotted:
            raise StorageError("raft.log: corrupt record (bit rot); replace this node")
        if now < self.failing_until:
            raise StorageError("raft.log: I/O error")
        return self.storage

    def store(self, writes: Sequence[Write]) -> None:
        """Makes ``writes`` durable, in order."""
        for write in writes:
            self._stored(write)
            write.apply(self.storage)

    def crash(self, writes: Sequence[Write], rng: random.Random, landed: int | None) -> None:
        """The process dies with ``writes`` in flight: the first ``landed`` (drawn if None)
        were synced, the next was only in the page cache and survives whole, in part or not
        at all, and the rest never started."""
        if landed is None:
            landed = rng.randint(0, len(writes))
        self.store(writes[:landed])
        if landed == len(writes):
            return
        torn = writes[landed]
        if isinstance(torn.arg, tuple):
            kept = rng.randint(0, len(torn.arg))
            if kept:
                self.store([Write(torn.name, torn.arg[:kept])])
        elif rng.random() < 0.5:
            self.store([torn])
