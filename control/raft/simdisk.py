"""The asynchronous simulator's disk: storage whose writes land only when the simulator says
so, and which fails the way a disk does.

A persist is the sequence of storage calls :func:`~control.raft.storage.persist_ready` (or
``persist_compaction``) makes, recorded as :class:`Write` values by :func:`planned_writes`
instead of being carried out. Each call is durable (written and fsynced) when it returns,
so a crash part-way through a persist leaves the calls before it durable, the call in
progress unsynced, and the calls after it not started. A write error (ENOSPC, EIO) leaves
its call in that same unsynced state.

``storage``, a :class:`MemoryStorage`, is what the node holds durably: the simulator's
checkers read it. A disk either keeps only that, and decides itself what of an unsynced
call survives a crash (whole, not at all or, an append, a prefix of its entries), or,
given a :class:`FaultyFileSystem`, also runs every call on a
:class:`~control.raft.diskstore.DiskStorage` over it. Then a crash interrupts the call in
progress at one of its syncs, loses power or kills the process, and reads back what
DiskStorage loads from the files: torn tails, checksums and fsync-on-open are under test.
Every storage call is atomic, so what it loads must be the state from before the call or
after it (a :class:`Violation` otherwise), and bit rot must make it refuse to start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.raft.checkers import Violation
from control.raft.diskstore import HARD_STATE_FILE, LOG_FILE, SNAPSHOT_FILE, DiskStorage
from control.raft.errors import CorruptRecordError, StorageError
from control.raft.faultfs import FaultyFileSystem, SyncHung
from control.raft.memstore import MemoryStorage
from control.raft.records import scan_records
from control.raft.storage import Storage
from control.raft.types import Entry, HardState, Snapshot

WriteCall = Callable[[Storage], None]

DATA_DIR = "/raft"
RESERVE_BYTES = 4096
"""The log's reserve on a simulated disk: small, as reading it back costs CPU per byte."""
POWER_LOSS_SHARE = 0.5
"""Of crashes, the share that lose power; the rest kill the process, keeping its page cache."""
_SYNCS_PER_CALL = 2
"""The syncs of most storage calls (an append makes one, or two as it grows its reserve; a
replaced file two); a crash interrupts a call at one of them, or after it if it has fewer."""

_State = tuple[int, tuple[Entry, ...], HardState, Snapshot | None]


@dataclass(frozen=True, slots=True)
class Write:
    """One mutating storage call: ``name`` is the :class:`Storage` method, ``arg`` its argument."""

    name: str
    arg: Sequence[Entry] | int | HardState | Snapshot

    def apply(self, storage: Storage) -> None:
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
    error_code: int = 0
    """The errno the failing write raises (ENOSPC, EIO on write or on fsync)."""

    @property
    def error(self) -> str:
        return f"[Errno {self.error_code}] {os.strerror(self.error_code)}"


class SimDisk:
    """A node's disk, and (from :meth:`open`) the Storage a node runs on.

    ``stored`` is told of every write just before it lands durably in ``storage`` (so it
    can compare with what was stored before)."""

    def __init__(
        self,
        storage: MemoryStorage,
        stored: Callable[[Write], None],
        files: FaultyFileSystem | None = None,
    ) -> None:
        self.storage = storage
        self.files = files
        self._stored = stored
        self._open: DiskStorage | None = None
        """The files' DiskStorage as the running (or next) node sees it."""
        self.failing_until = 0
        """While the tick is below this, opening fails: a disk that is full or erroring."""
        self.rotted = False
        """Bit rot struck: the disk must refuse to open from now on."""
        self.refusal = ""
        """What the files' DiskStorage said when it last refused to open."""

    # ----------------------------------------------------------------- the simulator's

    def open(self, now: int) -> Storage:
        """The storage to restart from, or StorageError as a failing or rotten disk gives."""
        if self.files is None and self.rotted:
            raise StorageError("raft.log: corrupt record (bit rot); replace this node")
        if now < self.failing_until:
            raise StorageError(f"{LOG_FILE}: {os.strerror(errno.EIO)}")
        if self.files is not None and self._open is None:
            self._read_back()
            if self._open is None:
                raise StorageError(self.refusal)
        return self

    def store(self, writes: Sequence[Write]) -> None:
        """Makes ``writes`` durable, in order."""
        for write in writes:
            if self._open is not None:
                write.apply(self._open)
            self._land(write)

    def crash(self, writes: Sequence[Write], rng: random.Random, failed: int | None) -> None:
        """The process dies with ``writes`` in flight. With ``failed`` (an errno) the first
        of them fails with it and nothing after it starts; else a drawn number of them
        landed, the next was in progress and the rest never started."""
        if failed is not None:
            landed, torn = 0, writes[:1]
        else:
            landed = rng.randint(0, len(writes))
            torn = writes[landed : landed + 1]
        self.store(writes[:landed])
        if self.files is None:
            if torn:
                self._tear(torn[0], rng)
            return
        before = _state(self.storage)
        if torn:
            self._interrupt(torn[0], rng, failed)
        if rng.random() < POWER_LOSS_SHARE:
            self.files.crash(rng)
        else:
            self.files.kill()
        self._open = None
        self._read_back(before, torn[0] if torn else None)

    def rot(self, rng: random.Random) -> bool:
        """Flips a bit the records' checksums must find when the node next opens its disk;
        False if there is nothing durable to rot yet."""
        if self.files is None:
            self.rotted = True
            return True
        files = self.files
        spans = []
        for name in (HARD_STATE_FILE, SNAPSHOT_FILE, LOG_FILE):
            path = os.path.join(DATA_DIR, name)
            if files.exists(path):
                data = files.durable_bytes(path)
                if name == LOG_FILE:
                    records = scan_records(data, path).records
                    # Damage to the last record can pass for a torn write
                    # (control.raft.records), so it may be truncated, not refused.
                    spans.append((path, records[-1][0] if records else 0))
                else:
                    spans.append((path, len(data)))
        total = sum(length for _, length in spans)
        if not total:
            return False
        at = rng.randrange(total)
        for path, length in spans:
            if at < length:
                files.flip_bit(path, at, rng.randrange(8))
                break
            at -= length
        self.rotted = True
        if self._open is not None:
            self._open.close()
            self._open = None
        return True

    # ----------------------------------------------------------------- Storage

    def first_index(self) -> int:
        return self._reader().first_index()

    def load_entries(self) -> list[Entry]:
        return self._reader().load_entries()

    def append(self, entries: Sequence[Entry]) -> None:
        self.store([Write("append", tuple(entries))])

    def compact(self, through: int) -> None:
        self.store([Write("compact", through)])

    def reset(self, index: int) -> None:
        self.store([Write("reset", index)])

    def load_hard_state(self) -> HardState:
        return self._reader().load_hard_state()

    def save_hard_state(self, hard_state: HardState) -> None:
        self.store([Write("save_hard_state", hard_state)])

    def load_snapshot(self) -> Snapshot | None:
        return self._reader().load_snapshot()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.store([Write("save_snapshot", snapshot)])

    # ----------------------------------------------------------------- internals

    def _reader(self) -> Storage:
        return self.storage if self._open is None else self._open

    def _land(self, write: Write) -> None:
        self._stored(write)
        write.apply(self.storage)

    def _tear(self, write: Write, rng: random.Random) -> None:
        """What of an unsynced call survives a crash, as far as the Storage contract goes."""
        if isinstance(write.arg, tuple):
            kept = rng.randint(0, len(write.arg))
            if kept:
                self._land(Write(write.name, write.arg[:kept]))
        elif rng.random() < 0.5:
            self._land(write)

    def _interrupt(self, write: Write, rng: random.Random, failed: int | None) -> None:
        """Runs ``write`` on the files until the process stops in it: at a drawn sync, or at
        the drawn write or sync that fails with ``failed``."""
        assert self.files is not None
        assert self._open is not None
        if failed is not None:
            self.files.fail_next(failed, on_sync=rng.random() < 0.5)
        else:
            self.files.hang_sync(after=rng.randrange(_SYNCS_PER_CALL))
        with contextlib.suppress(SyncHung, StorageError):
            write.apply(self._open)

    def _read_back(self, before: _State | None = None, torn: Write | None = None) -> None:
        """Opens the files as a restarting node does. What loads must be ``before`` or that
        with ``torn`` applied (then ``storage`` takes it in); with no ``before``, what
        ``storage`` holds."""
        assert self.files is not None
        try:
            opened = DiskStorage(DATA_DIR, create=True, fs=self.files, reserve_bytes=RESERVE_BYTES)
        except CorruptRecordError as e:
            if not self.rotted:
                raise Violation("storage", f"a crash left files that do not open: {e}") from e
            self.refusal = str(e)
            return
        if self.rotted:
            raise Violation("storage", "the disk opened though its durable data rotted")
        loaded = _state(opened)
        expected = _state(self.storage) if before is None else before
        if loaded != expected:
            after = None
            if torn is not None:
                copy = _memory_storage(expected)
                torn.apply(copy)
                after = _state(copy)
            if loaded != after:
                raise Violation(
                    "storage",
                    f"reopened after a crash during {torn.name if torn else 'no write'}, "
                    f"the disk holds {_describe(loaded)}, not {_describe(expected)}"
                    + (f" or {_describe(after)}" if after else ""),
                )
            assert torn is not None
            self._land(torn)
        self._open = opened


def _state(storage: Storage) -> _State:
    return (
        storage.first_index(),
        tuple(storage.load_entries()),
        storage.load_hard_state(),
        storage.load_snapshot(),
    )


def _memory_storage(state: _State) -> MemoryStorage:
    first, entries, hard_state, snapshot = state
    storage = MemoryStorage()
    storage.reset(first - 1)
    if entries:
        storage.append(entries)
    storage.save_hard_state(hard_state)
    if snapshot is not None:
        storage.save_snapshot(snapshot)
    return storage


def _describe(state: _State) -> str:
    first, entries, hard_state, snapshot = state
    last = entries[-1] if entries else None
    return (
        f"[log {first}..{last.index if last else first - 1}"
        f"{f' ending in term {last.term}' if last else ''}, {hard_state}, "
        f"snapshot {snapshot.index if snapshot else None}]"
    )
