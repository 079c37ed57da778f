"""FaultyFileSystem's own contract (page cache over a durable medium, power loss, kills,
rot, failing and hung syncs), and DiskStorage on it: a crash at any point of any call
leaves the state from before the call or after it, and rot is refused, never loaded."""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections.abc import Callable

import pytest

from control.raft.diskstore import HARD_STATE_FILE, LOG_FILE, SNAPSHOT_FILE, DiskStorage
from control.raft.errors import CorruptRecordError, StorageError
from control.raft.faultfs import FaultyFileSystem, SyncHung
from control.raft.memstore import MemoryStorage
from control.raft.records import SECTOR
from control.raft.storage import Storage
from control.raft.types import Entry, HardState, Snapshot

DIR = "/data"
FILE = "/data/f"
CRASH_SEEDS = 12
RESERVE = 700
"""Small, so appends grow the reserve (fallocate, fsync) and records span sectors."""


def _fs_with_file(content: bytes = b"") -> tuple[FaultyFileSystem, int]:
    fs = FaultyFileSystem()
    fs.makedirs(DIR)
    fd = fs.open(FILE, os.O_RDWR | os.O_CREAT)
    fs.pwrite(fd, content, 0)
    fs.fsync(fd)
    fs.fsync_dir(DIR)
    return fs, fd


def _read(fs: FaultyFileSystem, path: str = FILE) -> bytes:
    fd = fs.open(path, os.O_RDONLY)
    try:
        return fs.read_all(fd)
    finally:
        fs.close(fd)


# ----------------------------------------------------------------- the layer


def test_a_synced_write_survives_a_power_loss() -> None:
    fs, fd = _fs_with_file()
    fs.pwrite(fd, b"durable", 0)
    fs.fdatasync(fd)
    fs.crash(random.Random(1))
    assert _read(fs) == b"durable"


def test_an_unsynced_write_survives_whole_not_at_all_or_torn_by_sector() -> None:
    old = bytes(3 * SECTOR)
    new = b"\x01" * (3 * SECTOR)
    outcomes = set()
    for seed in range(200):
        fs, fd = _fs_with_file(old)
        fs.pwrite(fd, new, 0)
        assert _read(fs) == new, "the page cache serves the write at once"
        fs.crash(random.Random(seed))
        after = _read(fs)
        sectors = tuple(after[i : i + SECTOR] == new[:SECTOR] for i in range(0, len(old), SECTOR))
        for i, landed in enumerate(sectors):
            assert after[i * SECTOR : (i + 1) * SECTOR] == (new if landed else old)[:SECTOR]
        outcomes.add(sectors)
    assert (False, False, False) in outcomes
    assert (True, True, True) in outcomes
    assert (True, False, False) in outcomes, "a prefix"
    assert (False, True, False) in outcomes, "sectors out of order"


def test_a_kill_keeps_the_page_cache_but_not_as_durable() -> None:
    outcomes = set()
    for seed in range(40):
        fs, fd = _fs_with_file(b"old")
        fs.pwrite(fd, b"new", 0)
        fs.kill()
        assert _read(fs) == b"new"
        fs.crash(random.Random(seed))
        outcomes.add(_read(fs))
    assert outcomes == {b"old", b"new"}


def test_a_rename_is_durable_only_after_the_directory_is_synced() -> None:
    outcomes = set()
    for seed in range(40):
        for sync_dir in (False, True):
            fs, _ = _fs_with_file(b"old")
            tmp = FILE + ".tmp"
            fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            fs.pwrite(fd, b"new", 0)
            fs.fsync(fd)
            fs.replace(tmp, FILE)
            assert _read(fs) == b"new"
            if sync_dir:
                fs.fsync_dir(DIR)
            fs.crash(random.Random(seed))
            outcomes.add((sync_dir, _read(fs), fs.exists(tmp)))
    # Undone, the rename leaves the synced temporary file beside the old one, unless the
    # temporary file's creation was undone too.
    assert outcomes == {
        (False, b"old", False),
        (False, b"old", True),
        (False, b"new", False),
        (True, b"new", False),
    }


def test_a_created_file_vanishes_in_a_power_loss_before_its_directory_is_synced() -> None:
    fs, _ = _fs_with_file()
    fd = fs.open(DIR + "/g", os.O_WRONLY | os.O_CREAT)
    fs.pwrite(fd, b"x", 0)
    fs.fsync(fd)
    fs.crash(random.Random(0))
    seen_after_many = {fs.exists(DIR + "/g")}
    for seed in range(1, 20):
        fs, _ = _fs_with_file()
        fd = fs.open(DIR + "/g", os.O_WRONLY | os.O_CREAT)
        fs.fsync(fd)
        fs.crash(random.Random(seed))
        seen_after_many.add(fs.exists(DIR + "/g"))
    assert seen_after_many == {False, True}


def test_a_flipped_bit_changes_the_durable_data() -> None:
    fs, _ = _fs_with_file(b"\x00\x00")
    fs.flip_bit(FILE, 1, 3)
    assert fs.durable_bytes(FILE) == b"\x00\x08"
    assert _read(fs) == b"\x00\x08"
    with pytest.raises(ValueError, match="no durable bit"):
        fs.flip_bit(FILE, 2, 0)


def test_locks_exclude_other_descriptors_until_closed_or_killed() -> None:
    fs, fd = _fs_with_file()
    fs.lock(fd)
    other = fs.open(FILE, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fs.lock(other)
    fs.kill()
    fs.lock(fs.open(FILE, os.O_RDWR))


# ----------------------------------------------------------------- DiskStorage on it


def _store(fs: FaultyFileSystem) -> DiskStorage:
    return DiskStorage(DIR, create=True, fs=fs, reserve_bytes=RESERVE)


def _entries(first: int, last: int, term: int, size: int = 300) -> list[Entry]:
    return [Entry(i, term, data=bytes([i % 251 + 1]) * size) for i in range(first, last + 1)]


Call = Callable[[Storage], None]
CALLS: list[tuple[str, Call]] = [
    ("append 1..3", lambda s: s.append(_entries(1, 3, 1))),
    ("hard state", lambda s: s.save_hard_state(HardState(1, 2, 2))),
    ("append 4..5", lambda s: s.append(_entries(4, 5, 1, size=40))),
    ("conflict at 4", lambda s: s.append(_entries(4, 6, 2))),
    ("snapshot", lambda s: s.save_snapshot(Snapshot(3, 1, b"state"))),
    ("compact", lambda s: s.compact(3)),
    ("append 7", lambda s: s.append(_entries(7, 7, 2, size=1200))),
    ("hard state 2", lambda s: s.save_hard_state(HardState(2, None, 6))),
    ("reset", lambda s: s.reset(9)),
    ("append 10", lambda s: s.append(_entries(10, 10, 3))),
]


def _state(s: Storage) -> tuple[object, ...]:
    return (s.first_index(), s.load_entries(), s.load_hard_state(), s.load_snapshot())


@pytest.mark.parametrize("power_loss", [True, False], ids=["power_loss", "kill"])
def test_a_crash_at_any_sync_of_any_call_leaves_the_state_before_or_after_it(
    power_loss: bool, caplog: pytest.LogCaptureFixture
) -> None:
    torn_tails = 0
    for at, (name, call) in enumerate(CALLS):
        for sync in range(4):
            for seed in range(CRASH_SEEDS):
                fs = FaultyFileSystem()
                model = MemoryStorage()
                with _store(fs) as s:
                    for _, earlier in CALLS[:at]:
                        earlier(s)
                        earlier(model)
                    before = _state(model)
                    call(model)
                    after = _state(model)
                    fs.hang_sync(after=sync)
                    try:
                        call(s)
                    except SyncHung:
                        pass
                    else:
                        assert _state(s) == after
                if power_loss:
                    fs.crash(random.Random(seed))
                else:
                    fs.kill()
                caplog.clear()
                with _store(fs) as s:
                    loaded = _state(s)
                    torn_tails += "truncating torn tail" in caplog.text
                context = f"crash in {name!r} at sync {sync}, seed {seed}"
                assert loaded in (before, after), context
    print(f"torn tails truncated: {torn_tails}")
    assert (torn_tails > 0) == power_loss


def _rotting_store() -> tuple[FaultyFileSystem, tuple[object, ...]]:
    fs = FaultyFileSystem()
    with _store(fs) as s:
        for _, call in CALLS[:7]:
            call(s)
        return fs, _state(s)


@pytest.mark.parametrize("name", [LOG_FILE, HARD_STATE_FILE, SNAPSHOT_FILE])
def test_a_flipped_bit_in_synced_data_is_refused_never_loaded(name: str) -> None:
    """Every bit of the file; a flip in the log's zeroed reserve may be cut off as a torn
    tail, which changes nothing loaded."""
    fs, pristine = _rotting_store()
    path = os.path.join(DIR, name)
    refused = 0
    for position in range(len(fs.durable_bytes(path)) * 8):
        fs.flip_bit(path, position // 8, position % 8)
        try:
            with _store(fs) as s:
                loaded = _state(s)
        except CorruptRecordError:
            refused += 1
            fs.flip_bit(path, position // 8, position % 8)  # a refusal wrote nothing
            continue
        assert loaded == pristine, f"bit {position} of {name} loaded as changed data"
        fs, _ = _rotting_store()
    assert refused > 0


def test_write_errors_surface_as_storage_errors_naming_the_file() -> None:
    fs = FaultyFileSystem()
    with _store(fs) as s:
        fs.fail_next(errno.ENOSPC)
        with pytest.raises(StorageError, match=f"{DIR}/{LOG_FILE}: No space left on device"):
            s.append(_entries(1, 1, 1))
        fs.fail_next(errno.EIO, on_sync=True)
        with pytest.raises(StorageError, match=f"{DIR}/{HARD_STATE_FILE}: Input/output error"):
            s.save_hard_state(HardState(1, None, 0))
    fs.fail_next(errno.EIO, on_sync=True)
    with pytest.raises(StorageError, match="Input/output error"):
        _store(fs)


def test_a_hung_sync_blocks_a_thread_until_released() -> None:
    fs = FaultyFileSystem()
    with _store(fs) as s:
        release = threading.Event()
        fs.hang_sync(release=release)
        writer = threading.Thread(target=s.append, args=(_entries(1, 1, 1),))
        writer.start()
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            assert writer.is_alive(), "the append returned while its sync hung"
            writer.join(0.01)
        release.set()
        writer.join(10)
        assert not writer.is_alive()
    fs.crash(random.Random(0))
    with _store(fs) as s:
        assert [e.index for e in s.load_entries()] == [1]


def test_a_hung_sync_raises_for_a_single_threaded_caller() -> None:
    fs = FaultyFileSystem()
    with _store(fs) as s:
        fs.hang_sync(after=2)
        s.append(_entries(1, 1, 1))  # two syncs: the grown reserve, then the record
        with pytest.raises(SyncHung):
            s.append(_entries(2, 2, 1))
