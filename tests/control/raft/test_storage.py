"""Durable storage: the shared contract, then disk recovery with real files."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from control.raft import diskstore
from control.raft.diskstore import HARD_STATE_FILE, LOG_FILE, SNAPSHOT_FILE, DiskStorage
from control.raft.errors import CorruptRecordError, DataDirError, StorageError
from control.raft.memstore import MemoryStorage
from control.raft.ready import Compaction, Ready
from control.raft.records import HEADER, SECTOR, scan_records
from control.raft.storage import Storage, load_state, persist_compaction, persist_ready
from control.raft.types import Entry, HardState, Role, Snapshot, SoftState
from tests.control.raft.harness import log_of

Factory = Callable[[], Storage]


@pytest.fixture(params=["memory", "disk"])
def new_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[DiskStorage] = []

    def make() -> Storage:
        if request.param == "memory":
            return MemoryStorage()
        store = DiskStorage(tmp_path / "data", create=True)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_append_replaces_from_the_first_new_index(new_storage: Factory) -> None:
    s = new_storage()
    s.append(log_of([1, 1, 1, 2]))
    s.append([Entry(3, 3, data=b"new")])
    assert [(e.index, e.term) for e in s.load_entries()] == [(1, 1), (2, 1), (3, 3)]
    with pytest.raises(ValueError, match="gap"):
        s.append([Entry(5, 3)])


def test_compact_and_reset_move_the_first_index(new_storage: Factory) -> None:
    s = new_storage()
    s.append(log_of([1, 1, 1, 1]))
    s.compact(2)
    assert s.first_index() == 3
    assert [e.index for e in s.load_entries()] == [3, 4]
    s.reset(10)
    assert s.first_index() == 11
    assert s.load_entries() == []
    s.append([Entry(11, 2)])
    assert s.load_entries() == [Entry(11, 2)]


def test_hard_state_and_snapshot_round_trip(new_storage: Factory) -> None:
    s = new_storage()
    assert s.load_hard_state() == HardState()
    assert s.load_snapshot() is None
    s.save_hard_state(HardState(4, 2, 3))
    s.save_snapshot(Snapshot(3, 2, b"image"))
    assert s.load_hard_state() == HardState(4, 2, 3)
    assert s.load_snapshot() == Snapshot(3, 2, b"image")


class _Recorder(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def append(self, entries: Sequence[Entry]) -> None:
        self.ops.append("append")
        super().append(entries)

    def compact(self, through: int) -> None:
        self.ops.append("compact")
        super().compact(through)

    def reset(self, index: int) -> None:
        self.ops.append("reset")
        super().reset(index)

    def save_hard_state(self, hard_state: HardState) -> None:
        self.ops.append("hard_state")
        super().save_hard_state(hard_state)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.ops.append("snapshot")
        super().save_snapshot(snapshot)


def test_persist_order_keeps_commit_within_the_stored_log() -> None:
    s = _Recorder()
    rd = Ready(
        SoftState(Role.FOLLOWER, 1, 2),
        HardState(2, None, 6),
        (Entry(6, 2),),
        Snapshot(5, 2, b""),
        (),
        (),
        (),
    )
    persist_ready(s, rd)
    assert s.ops == ["snapshot", "reset", "append", "hard_state"]
    s.ops.clear()
    persist_compaction(s, Compaction(Snapshot(6, 2, b""), 4))
    assert s.ops == ["snapshot", "compact"]


def test_load_state_repairs_a_crash_between_snapshot_and_log_reset() -> None:
    s = MemoryStorage()
    s.append(log_of([1, 1, 2]))
    s.save_snapshot(Snapshot(5, 3, b"leader's"))
    state = load_state(s)
    assert state.entries == ()
    assert s.first_index() == 6


def test_load_state_keeps_a_log_that_continues_the_snapshot() -> None:
    s = MemoryStorage()
    s.append(log_of([1, 1, 2, 2]))
    s.save_snapshot(Snapshot(3, 2, b""))
    assert [e.index for e in load_state(s).entries] == [1, 2, 3, 4]
    assert s.first_index() == 1


# --------------------------------------------------------------------- disk recovery


THIRD = bytes(range(1, 256)) * 6  # no zero byte, and its record spans four sectors


def _filled(path: Path) -> None:
    with DiskStorage(path, create=True) as s:
        s.append(log_of([1, 1]))
        s.append([Entry(3, 2, data=THIRD)])
        s.save_hard_state(HardState(2, 1, 2))
        s.save_snapshot(Snapshot(1, 1, b"snap"))


def test_reopen_recovers_everything(tmp_path: Path) -> None:
    _filled(tmp_path)
    with DiskStorage(tmp_path) as s:
        assert [e.index for e in s.load_entries()] == [1, 2, 3]
        assert s.load_entries()[2].data == THIRD
        assert s.load_hard_state() == HardState(2, 1, 2)
        assert s.load_snapshot() == Snapshot(1, 1, b"snap")
        s.compact(2)
    with DiskStorage(tmp_path) as s:
        assert s.first_index() == 3
        assert [e.index for e in s.load_entries()] == [3]


def _written(path: Path) -> bytes:
    """The log's records, without the space it reserves after them."""
    raw = path.read_bytes()
    return raw[: scan_records(raw, str(path)).end]


def _last_record(data: bytes) -> int:
    return scan_records(data, "raft.log").records[-1][0]


def _unwritten(data: bytes, start: int) -> bytes:
    """`data` as it reads if the write of its bytes from `start` to the end of that sector
    never landed: the sector keeps its old contents, zeros from `start` on."""
    end = (start // SECTOR + 1) * SECTOR
    return data[:start] + bytes(len(data[start:end])) + data[end:]


RESERVE = bytes(4096)

Damage = Callable[[bytes, int], bytes]  # the log's records and the last one's offset


@pytest.mark.parametrize(
    ("damage", "survivors"),
    [
        pytest.param(lambda data, last: data[:-3], [1, 2], id="cut-mid-record"),
        pytest.param(
            lambda data, last: _unwritten(data, last) + RESERVE, [1, 2], id="lost-header-sector"
        ),
        pytest.param(
            lambda data, last: _unwritten(data, (last // SECTOR + 1) * SECTOR) + RESERVE, [1, 2],
            id="lost-middle-sector",
        ),
        pytest.param(
            lambda data, last: _unwritten(data, (len(data) - 1) // SECTOR * SECTOR) + RESERVE,
            [1, 2], id="lost-final-sector",
        ),
        pytest.param(lambda data, last: data + b"RF", [1, 2, 3], id="cut-mid-header"),
    ],
)  # fmt: skip
def test_torn_tail_is_truncated_and_the_node_starts(
    tmp_path: Path,
    damage: Damage,
    survivors: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _filled(tmp_path)
    log_path = tmp_path / LOG_FILE
    data = _written(log_path)
    log_path.write_bytes(damage(data, _last_record(data)))
    with caplog.at_level(logging.WARNING), DiskStorage(tmp_path) as s:
        assert [e.index for e in s.load_entries()] == survivors
        s.append([Entry(len(survivors) + 1, 5)])
    assert "torn tail" in caplog.text
    with DiskStorage(tmp_path) as s:
        assert s.load_entries()[-1] == Entry(len(survivors) + 1, 5)


@pytest.mark.parametrize(
    ("damage", "defect"),
    [
        pytest.param(
            lambda data, last: data[:-9] + b"\xff" * 9 + RESERVE,
            "payload checksum mismatch though every sector", id="garbled-last-bytes",
        ),
        pytest.param(
            lambda data, last: data[:-9] + bytes(9) + RESERVE,
            "payload checksum mismatch though every sector", id="zeros-within-a-sector",
        ),
        pytest.param(
            lambda data, last: data[:last] + b"\xff" + data[last + 1 :] + RESERVE,
            "no record header", id="garbled-last-header",
        ),
    ],
)  # fmt: skip
def test_damage_no_torn_write_leaves_in_the_last_record_refuses_to_start(
    tmp_path: Path, damage: Damage, defect: str
) -> None:
    """Sectors land whole or read as zeros, so damage inside a sector that landed is not a
    torn write: the last record was acknowledged and must not be dropped."""
    _filled(tmp_path)
    log_path = tmp_path / LOG_FILE
    data = _written(log_path)
    last = _last_record(data)
    log_path.write_bytes(damage(data, last))
    with pytest.raises(CorruptRecordError, match=f"byte offset {last}: {defect}"):
        DiskStorage(tmp_path)


def test_a_torn_tail_that_would_drop_committed_entries_refuses_to_start(tmp_path: Path) -> None:
    _filled(tmp_path)
    log_path = tmp_path / LOG_FILE
    data = _written(log_path)
    with DiskStorage(tmp_path) as s:
        s.save_hard_state(HardState(2, 1, 3))  # entry 3 is committed: its record was durable
    log_path.write_bytes(data[:-3])
    with pytest.raises(CorruptRecordError, match="would drop committed entries up to 3"):
        DiskStorage(tmp_path)


def test_torn_tail_is_cut_at_the_last_whole_record(tmp_path: Path) -> None:
    _filled(tmp_path)
    log_path = tmp_path / LOG_FILE
    intact = _written(log_path)
    last_offset = scan_records(intact, str(log_path)).records[-1][0]
    log_path.write_bytes(intact[:-1])
    DiskStorage(tmp_path).close()
    assert log_path.read_bytes() == intact[:last_offset]


def test_reserved_space_after_the_last_record_is_not_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _filled(tmp_path)
    log_path = tmp_path / LOG_FILE
    assert len(log_path.read_bytes()) > len(_written(log_path))  # space is reserved
    with caplog.at_level(logging.WARNING), DiskStorage(tmp_path) as s:
        assert [e.index for e in s.load_entries()] == [1, 2, 3]
        s.append([Entry(4, 5)])
    assert caplog.text == ""
    with DiskStorage(tmp_path) as s:
        assert [e.index for e in s.load_entries()] == [1, 2, 3, 4]


def test_appends_within_the_reserve_leave_the_file_size_alone(tmp_path: Path) -> None:
    """So each append's fdatasync has no file size to commit."""
    log_path = tmp_path / LOG_FILE
    with DiskStorage(tmp_path, create=True) as s:
        s.append([Entry(1, 1, data=b"first")])
        size = log_path.stat().st_size
        for index in range(2, 50):
            s.append([Entry(index, 1, data=b"x" * 100)])
        assert log_path.stat().st_size == size


def test_appends_past_the_reserve_extend_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskstore, "RESERVE_BYTES", 256)
    log_path = tmp_path / LOG_FILE
    with DiskStorage(tmp_path, create=True) as s:
        sizes = set()
        for index in range(1, 30):
            s.append([Entry(index, 1, data=bytes([index]) * 100)])
            sizes.add(log_path.stat().st_size)
        s.compact(10)  # a rewritten log reserves space too
        s.append([Entry(30, 1, data=b"after compaction")])
    assert len(sizes) > 2
    with DiskStorage(tmp_path) as s:
        assert [e.index for e in s.load_entries()] == list(range(11, 31))
        assert s.load_entries()[0].data == bytes([11]) * 100
        assert s.load_entries()[-1].data == b"after compaction"


def test_a_buffered_append_leaves_its_flush_to_the_caller(tmp_path: Path) -> None:
    log_path = tmp_path / LOG_FILE
    with DiskStorage(tmp_path, create=True) as s:
        s.append(log_of([1, 1]))
        fd = s.append_buffered([Entry(2, 2, data=b"replaces"), Entry(3, 2)])
        assert fd is not None
        assert os.path.samestat(os.fstat(fd), log_path.stat())
        os.fdatasync(fd)
        assert [(e.index, e.term) for e in s.load_entries()] == [(1, 1), (2, 2), (3, 2)]
    with DiskStorage(tmp_path) as s:
        assert [(e.index, e.term) for e in s.load_entries()] == [(1, 1), (2, 2), (3, 2)]
        assert s.load_entries()[1].data == b"replaces"


def test_a_buffered_append_that_needs_more_space_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskstore, "RESERVE_BYTES", 256)
    log_path = tmp_path / LOG_FILE
    with DiskStorage(tmp_path, create=True) as s:
        s.append([Entry(1, 1)])
        before = log_path.read_bytes()
        assert s.append_buffered([Entry(2, 1, data=b"x" * 300)]) is None
        assert log_path.read_bytes() == before
        assert [e.index for e in s.load_entries()] == [1]
        s.append([Entry(2, 1, data=b"x" * 300)])  # the slow path grows the reserve
        assert s.append_buffered([Entry(3, 1)]) is not None
    with DiskStorage(tmp_path) as s:
        assert [e.index for e in s.load_entries()] == [1, 2, 3]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checksum_mismatch_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    _filled(tmp_path)
    log_path = tmp_path / LOG_FILE
    _flip(log_path, 20)
    with pytest.raises(CorruptRecordError) as err:
        DiskStorage(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(log_path) in message
    assert "byte offset 0" in message
    assert err.value.offset == 0


def test_bad_header_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    _filled(tmp_path)
    data = (tmp_path / LOG_FILE).read_bytes()
    second = HEADER.size + int.from_bytes(data[4:8], "big")
    _flip(tmp_path / LOG_FILE, second)
    with pytest.raises(CorruptRecordError, match=f"byte offset {second}: no record header"):
        DiskStorage(tmp_path)


@pytest.mark.parametrize("name", [HARD_STATE_FILE, SNAPSHOT_FILE])
def test_corrupt_hard_state_or_snapshot_refuses_to_start(tmp_path: Path, name: str) -> None:
    _filled(tmp_path)
    path = tmp_path / name
    _flip(path, os.path.getsize(path) - 1)
    with pytest.raises(CorruptRecordError, match=str(path)):
        DiskStorage(tmp_path)


def test_refusing_to_start_releases_the_directory(tmp_path: Path) -> None:
    _filled(tmp_path)
    _flip(tmp_path / LOG_FILE, 20)
    for _ in range(2):
        with pytest.raises(CorruptRecordError):
            DiskStorage(tmp_path)


def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataDirError, match=f"^raft data directory {missing} does not exist$"):
        DiskStorage(missing)
    DiskStorage(missing, create=True).close()
    assert missing.is_dir()


def test_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(DataDirError, match="is not a directory"):
        DiskStorage(path)


def test_unreadable_log_is_a_clear_one_line_error(tmp_path: Path) -> None:
    (tmp_path / LOG_FILE).mkdir()
    with pytest.raises(StorageError) as err:
        DiskStorage(tmp_path)
    assert str(tmp_path / LOG_FILE) in str(err.value)
    assert "\n" not in str(err.value)


def test_data_dir_is_locked_while_open(tmp_path: Path) -> None:
    with DiskStorage(tmp_path), pytest.raises(DataDirError, match="in use"):
        DiskStorage(tmp_path)
    DiskStorage(tmp_path).close()
