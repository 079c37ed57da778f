"""Durable storage in a data directory.

Files:

- ``raft.log``: append-only records. A BASE record (the index before the first entry)
  starts a rewritten file; each ENTRIES record holds one append batch and replaces stored
  entries from its first index on, so a conflict truncation is just another append.
  Compaction and reset rewrite the file to a temporary name and rename it into place.
  The file reserves space ahead of its last record (``RESERVE_BYTES`` at a time, with
  fallocate), so an append changes no file size and its ``fdatasync`` flushes data alone,
  without a filesystem journal commit (BENCHMARKS.md, control plane).
- ``hardstate`` and ``snapshot``: one record each, replaced atomically (write a temporary
  file, fsync it, rename it, fsync the directory).
- ``LOCK``: held with ``flock`` while open, so two processes never share a directory.

Every file operation goes through a :class:`~control.raft.filesystem.FileSystem`: the real
one by default, or a simulated one that loses and damages data the way a disk does
(control.raft.faultfs).

Every mutating call fsyncs before it returns, except ``append_buffered``, which hands its
flush to the caller (control.raft.storage.BufferedAppend). Opening fsyncs every file it
reads and the directory before it returns: a process killed during a flush leaves its
write in the page cache, where it reads back whole but is not yet durable. On open, a torn
tail of ``raft.log`` is truncated (and logged) unless that would drop an entry the stored
commit index covers; any other damage refuses to start (control.raft.records).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from types import TracebackType

from control.raft.errors import CorruptRecordError, DataDirError, StorageError
from control.raft.filesystem import OS_FILES, FileSystem
from control.raft.membership import Membership, MembershipError
from control.raft.records import encode_record, scan_records
from control.raft.storage import append_offset
from control.raft.types import Entry, EntryKind, HardState, Snapshot

log = logging.getLogger(__name__)

LOG_FILE = "raft.log"
HARD_STATE_FILE = "hardstate"
SNAPSHOT_FILE = "snapshot"
LOCK_FILE = "LOCK"
RESERVE_BYTES = 4 * 1024 * 1024

_BASE = b"B"
_ENTRIES = b"E"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_ENTRY = struct.Struct(">QQBI")
_HARD_STATE = struct.Struct(">QQBQ")
_SNAPSHOT = struct.Struct(">QQ")
# A snapshot payload is index | term | data; with this bit set in the index (never set in
# a real index), a u32 length and the encoded configuration come before the data. Payloads
# written before membership changes lack it and load with no configuration.
_WITH_MEMBERSHIP = 1 << 63
_MEMBERSHIP_LENGTH = struct.Struct(">I")


class DiskStorage:
    """Implements :class:`~control.raft.storage.Storage` on files in ``path``.

    Raises :class:`DataDirError` if the directory is missing (unless ``create``), not a
    directory, unusable or locked, :class:`CorruptRecordError` for damage other than a
    torn tail, and :class:`StorageError` for failed reads and writes. Close it (or use it as a
    context manager) to release the directory lock.

    ``reserve_bytes`` is how much zeroed space the log keeps ahead of its last record
    (default :data:`RESERVE_BYTES`); every file operation goes through ``fs``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        fs: FileSystem = OS_FILES,
        reserve_bytes: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._fs = fs
        self._reserve_bytes = RESERVE_BYTES if reserve_bytes is None else reserve_bytes
        _check_dir(fs, self.path, create)
        self._lock_fd = _lock(fs, os.path.join(self.path, LOCK_FILE))
        try:
            self._hard_state = _load_hard_state(fs, self._file(HARD_STATE_FILE))
            self._snapshot = _load_snapshot(fs, self._file(SNAPSHOT_FILE))
            self._base, self._entries, self._log_end = _load_log(
                fs, self._file(LOG_FILE), self._hard_state.commit
            )
            with _io_errors(self._file(LOG_FILE)):
                self._log_fd = fs.open(self._file(LOG_FILE), os.O_WRONLY | os.O_CREAT, 0o644)
                self._log_size = fs.size(self._log_fd)
                # Makes the renames that installed the files just read durable, and the
                # log's entry if it was just created, before anything read is relied on.
                fs.fsync_dir(self.path)
        except BaseException:
            fs.close(self._lock_fd)
            raise

    def close(self) -> None:
        self._fs.close(self._log_fd)
        self._fs.close(self._lock_fd)

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- LogStore

    def first_index(self) -> int:
        return self._base + 1

    def load_entries(self) -> list[Entry]:
        return list(self._entries)

    def append(self, entries: Sequence[Entry]) -> None:
        offset = append_offset(self._base, self._entries, entries)
        record = encode_record(_encode_entries(entries))
        with _io_errors(self._file(LOG_FILE)):
            self._reserve(len(record))
            self._write_log(offset, entries, record)
            self._fs.fdatasync(self._log_fd)

    def append_buffered(self, entries: Sequence[Entry]) -> int | None:
        offset = append_offset(self._base, self._entries, entries)
        record = encode_record(_encode_entries(entries))
        if self._log_end + len(record) > self._log_size:
            return None
        with _io_errors(self._file(LOG_FILE)):
            self._write_log(offset, entries, record)
        return self._log_fd

    def compact(self, through: int) -> None:
        if through <= self._base:
            return
        keep = self._entries[through - self._base :] if through < self._last_index() else []
        self._rewrite_log(through, keep)

    def reset(self, index: int) -> None:
        self._rewrite_log(index, [])

    # ----------------------------------------------------------------- StableStore

    def load_hard_state(self) -> HardState:
        return self._hard_state

    def save_hard_state(self, hard_state: HardState) -> None:
        vote = hard_state.vote
        payload = _HARD_STATE.pack(hard_state.term, hard_state.commit, vote is not None, vote or 0)
        _replace_file(self._fs, self._file(HARD_STATE_FILE), encode_record(payload))
        self._hard_state = hard_state

    # ----------------------------------------------------------------- SnapshotStore

    def load_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def save_snapshot(self, snapshot: Snapshot) -> None:
        payload = _snapshot_payload(snapshot)
        _replace_file(self._fs, self._file(SNAPSHOT_FILE), encode_record(payload))
        self._snapshot = snapshot

    # ----------------------------------------------------------------- internals

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _last_index(self) -> int:
        return self._base + len(self._entries)

    def _write_log(self, offset: int, entries: Sequence[Entry], record: bytes) -> None:
        """Writes `record`, holding `entries` from list position `offset` on, after the
        last record; the caller flushes it."""
        _write_all(self._fs, self._log_fd, record, self._log_end)
        self._log_end += len(record)
        del self._entries[offset:]
        self._entries.extend(entries)

    def _reserve(self, length: int) -> None:
        """Makes room for ``length`` more bytes of log, durably, if the reserve is short."""
        if self._log_end + length <= self._log_size:
            return
        grow = max(self._reserve_bytes, self._log_end + length - self._log_size)
        self._fs.posix_fallocate(self._log_fd, self._log_size, grow)
        self._fs.fsync(self._log_fd)
        self._log_size += grow

    def _rewrite_log(self, base: int, entries: list[Entry]) -> None:
        data = encode_record(_BASE + _U64.pack(base))
        if entries:
            data += encode_record(_encode_entries(entries))
        path = self._file(LOG_FILE)
        _replace_file(self._fs, path, data, reserve=self._reserve_bytes)
        with _io_errors(path):
            self._fs.close(self._log_fd)
            self._log_fd = self._fs.open(path, os.O_WRONLY)
        self._base, self._entries = base, entries
        self._log_end, self._log_size = len(data), len(data) + self._reserve_bytes


def _check_dir(fs: FileSystem, path: str, create: bool) -> None:
    if not fs.exists(path):
        if not create:
            raise DataDirError(f"raft data directory {path} does not exist")
        with _io_errors(path):
            fs.makedirs(path)
    if not fs.isdir(path):
        raise DataDirError(f"raft data directory {path} is not a directory")
    if not fs.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise DataDirError(f"raft data directory {path} is not readable and writable")


def _lock(fs: FileSystem, path: str) -> int:
    try:
        fd = fs.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DataDirError(f"{path}: cannot open lock file: {e.strerror}") from e
    try:
        fs.lock(fd)
    except OSError as e:
        fs.close(fd)
        raise DataDirError(f"{path}: data directory is in use by another process") from e
    return fd


@contextlib.contextmanager
def _io_errors(path: str) -> Iterator[None]:
    """Turns an OSError into a one-line StorageError naming ``path``."""
    try:
        yield
    except OSError as e:
        raise StorageError(f"{path}: {e.strerror or e}") from e


def _read_durable(fs: FileSystem, path: str) -> bytes | None:
    """The file's contents, flushed to disk first, or None if it does not exist."""
    with _io_errors(path):
        try:
            fd = fs.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fs.fsync(fd)
            return fs.read_all(fd)
        finally:
            fs.close(fd)


def _write_all(fs: FileSystem, fd: int, data: bytes, offset: int = 0) -> None:
    view = memoryview(data)
    while view:
        written = fs.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _replace_file(fs: FileSystem, path: str, data: bytes, reserve: int = 0) -> None:
    """Replaces ``path`` with ``data`` atomically, with ``reserve`` zero bytes after it."""
    tmp = path + ".tmp"
    with _io_errors(path):
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fs, fd, data)
            if reserve:
                fs.posix_fallocate(fd, len(data), reserve)
            fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(tmp, path)
        fs.fsync_dir(os.path.dirname(path) or ".")


def _single_record(fs: FileSystem, path: str) -> tuple[int, bytes] | None:
    """The one record of an atomically replaced file; any damage there is corruption."""
    buf = _read_durable(fs, path)
    if buf is None:
        return None
    scan = scan_records(buf, path)
    if scan.torn or len(scan.records) != 1:
        raise CorruptRecordError(path, scan.end, "expected exactly one complete record")
    return scan.records[0]


def _load_hard_state(fs: FileSystem, path: str) -> HardState:
    record = _single_record(fs, path)
    if record is None:
        return HardState()
    offset, payload = record
    try:
        term, commit, has_vote, vote = _HARD_STATE.unpack(payload)
    except struct.error as e:
        raise CorruptRecordError(path, offset, "undecodable hard state") from e
    return HardState(term, vote if has_vote else None, commit)


def _load_snapshot(fs: FileSystem, path: str) -> Snapshot | None:
    record = _single_record(fs, path)
    if record is None:
        return None
    offset, payload = record
    try:
        index, term = _SNAPSHOT.unpack_from(payload)
        if not index & _WITH_MEMBERSHIP:
            return Snapshot(index, term, payload[_SNAPSHOT.size :])
        (length,) = _MEMBERSHIP_LENGTH.unpack_from(payload, _SNAPSHOT.size)
        at = _SNAPSHOT.size + _MEMBERSHIP_LENGTH.size
        membership = Membership.from_bytes(payload[at : at + length])
    except (struct.error, MembershipError) as e:
        raise CorruptRecordError(path, offset, "undecodable snapshot") from e
    return Snapshot(index & ~_WITH_MEMBERSHIP, term, payload[at + length :], membership)


def _snapshot_payload(snapshot: Snapshot) -> bytes:
    if snapshot.membership is None:
        return _SNAPSHOT.pack(snapshot.index, snapshot.term) + snapshot.data
    members = snapshot.membership.to_bytes()
    head = _SNAPSHOT.pack(snapshot.index | _WITH_MEMBERSHIP, snapshot.term)
    return head + _MEMBERSHIP_LENGTH.pack(len(members)) + members + snapshot.data


def _load_log(fs: FileSystem, path: str, commit: int) -> tuple[int, list[Entry], int]:
    """The stored base index and entries, and the byte offset where the next record goes.

    ``commit`` is the stored commit index: a torn tail is never a record it covers, since
    the hard state is saved after the entries it commits."""
    buf = _read_durable(fs, path)
    if buf is None:
        return 0, [], 0
    scan = scan_records(buf, path)
    base, entries = _decode_log(path, scan.records)
    if scan.torn:
        if base + len(entries) < commit:
            raise CorruptRecordError(
                path, scan.end, f"a torn tail here would drop committed entries up to {commit}"
            )
        log.warning(
            "%s: truncating torn tail at byte offset %d (%d bytes)",
            path,
            scan.end,
            len(buf.rstrip(b"\0")) - scan.end,
        )
        with _io_errors(path):
            fd = fs.open(path, os.O_WRONLY)
            try:
                fs.ftruncate(fd, scan.end)
                fs.fsync(fd)
            finally:
                fs.close(fd)
    return base, entries, scan.end


def _decode_log(path: str, records: list[tuple[int, bytes]]) -> tuple[int, list[Entry]]:
    base, entries = 0, list[Entry]()
    for offset, payload in records:
        try:
            if payload[:1] == _BASE:
                (base,) = _U64.unpack(payload[1:])
                entries = []
                continue
            batch = _decode_entries(payload)
        except (struct.error, ValueError) as e:
            raise CorruptRecordError(path, offset, "undecodable record") from e
        first = batch[0].index
        if not base < first <= base + len(entries) + 1:
            raise CorruptRecordError(path, offset, f"entries start at {first}, a gap in the log")
        del entries[first - base - 1 :]
        entries.extend(batch)
    return base, entries


def _encode_entries(entries: Sequence[Entry]) -> bytes:
    parts = [_ENTRIES, _U32.pack(len(entries))]
    for e in entries:
        parts.append(_ENTRY.pack(e.index, e.term, e.kind, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def _decode_entries(payload: bytes) -> list[Entry]:
    if payload[:1] != _ENTRIES:
        raise ValueError("unknown record type")
    (count,) = _U32.unpack_from(payload, 1)
    if count == 0:
        raise ValueError("empty entries record")
    off = 1 + _U32.size
    entries: list[Entry] = []
    for _ in range(count):
        index, term, kind, length = _ENTRY.unpack_from(payload, off)
        off += _ENTRY.size
        if entries and index != entries[-1].index + 1:
            raise ValueError("entries in a record are not contiguous")
        if off + length > len(payload):
            raise ValueError("entry data overruns its record")
        entries.append(Entry(index, term, EntryKind(kind), payload[off : off + length]))
        off += length
    if off != len(payload):
        raise ValueError("trailing bytes after entries")
    return entries
