"""DiskStorage on damaged data directories, on logs written in format version 1, and the
fsync on open.

The damage matrix writes 40 entries, one append (one record) each, every one acknowledged,
then damages the 11th record (issue 16's) or the last: every bit of its header, a sample of
its payload's bits and each sector it touches. The store must either refuse to open, naming
the log and the first damaged record's offset, or, only where the damage is confined to the
last record (the only write that can have been in flight), open with the 39 entries before
it. No other outcome is allowed."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from control.raft import diskstore
from control.raft.diskstore import HARD_STATE_FILE, LOG_FILE, SNAPSHOT_FILE, DiskStorage
from control.raft.errors import CorruptRecordError
from control.raft.records import HEADER, MAGIC, MAGIC_V1, SECTOR, scan_records
from control.raft.types import Entry, EntryKind, HardState, Snapshot
from tests.control.test_service_errors import args_for, assert_one_line_error, run_control
from tests.support.control_cluster import TOKEN
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, wait_until

FIXTURES = Path(__file__).parent / "fixtures"
MIDDLE, LAST = 10, 39  # record positions; record i holds entry i + 1
RESERVE = 64 * 1024


def _entry_data(index: int) -> bytes:
    """600-1400 bytes without a zero byte, so every record spans sectors and none of its
    sectors reads as zeros unless damage made it so."""
    rng = random.Random(index)
    return rng.randbytes(rng.randrange(600, 1400)).replace(b"\0", b"\1")


ENTRIES = [Entry(i, 1, EntryKind.NORMAL, _entry_data(i)) for i in range(1, 41)]


@dataclass(frozen=True)
class WrittenLog:
    dir: Path
    path: Path
    pristine: bytes  # the whole file: records, then reserved zeros
    offsets: list[int]  # each record's offset
    end: int  # where the records end

    def record_at(self, offset: int) -> int:
        """The position of the record holding byte `offset`."""
        return max(i for i, start in enumerate(self.offsets) if start <= offset)

    def extent(self, record: int) -> tuple[int, int]:
        return self.offsets[record], [*self.offsets, self.end][record + 1]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> WrittenLog:
    """Shared by the matrix: each case damages it and puts it back (_open_damaged)."""
    directory = tmp_path_factory.mktemp("forty")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(diskstore, "RESERVE_BYTES", RESERVE)  # smaller scans, same layout
        with DiskStorage(directory, create=True) as store:
            for entry in ENTRIES:
                store.append([entry])
    path = directory / LOG_FILE
    pristine = path.read_bytes()
    scan = scan_records(pristine, str(path))
    assert len(scan.records) == 40
    return WrittenLog(directory, path, pristine, [o for o, _ in scan.records], scan.end)


def _open_damaged(log: WrittenLog, start: int, damaged: bytes) -> list[Entry] | CorruptRecordError:
    """Opens the store with the log's bytes from `start` on replaced by `damaged`, then
    puts the pristine log back."""
    fd = os.open(log.path, os.O_RDWR)
    try:
        os.pwrite(fd, damaged, start)
        try:
            with DiskStorage(log.dir) as store:
                return store.load_entries()
        except CorruptRecordError as err:
            return err
        finally:
            if os.fstat(fd).st_size == len(log.pristine):
                os.pwrite(fd, log.pristine[start : start + len(damaged)], start)
            else:  # a torn tail was cut off
                os.pwrite(fd, log.pristine, 0)
    finally:
        os.close(fd)


def _judge(log: WrittenLog, start: int, damaged: bytes) -> str:
    """Opens with `damaged` at `start`, asserts the outcome is allowed, and names it."""
    first = log.record_at(start)
    outcome = _open_damaged(log, start, damaged)
    if isinstance(outcome, CorruptRecordError):
        message = str(outcome)
        assert "\n" not in message
        assert message.startswith(f"{log.path}: corrupt record at byte offset ")
        assert outcome.offset == log.offsets[first], message
        return "refused"
    assert first == LAST, f"damage at byte {start} (record {first}) opened with {len(outcome)}"
    assert outcome == ENTRIES[:LAST]
    return "torn"


def _flipped(log: WrittenLog, offset: int, bit: int) -> bytes:
    return bytes([log.pristine[offset] ^ (1 << bit)])


@pytest.mark.parametrize("record", [MIDDLE, LAST], ids=["middle", "last"])
def test_every_header_bit_flipped_refuses_to_open(log: WrittenLog, record: int) -> None:
    """A flipped bit leaves every sector written, so even in the last record it is not a
    torn write: that record was acknowledged and must not be dropped."""
    start = log.offsets[record]
    outcomes = {
        _judge(log, offset, _flipped(log, offset, bit))
        for offset in range(start, start + HEADER.size)
        for bit in range(8)
    }
    assert outcomes == {"refused"}


@pytest.mark.parametrize("record", [MIDDLE, LAST], ids=["middle", "last"])
def test_a_sample_of_payload_bits_flipped_refuses_to_open(log: WrittenLog, record: int) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    start, end = log.extent(record)
    payload = range(start + HEADER.size, end)
    # The entry framing (type, count, index, term, kind, length) and the final bytes, then
    # a random sample of the data.
    offsets = [*payload[:32], *payload[-4:], *rng.sample(payload[32:-4], 24)]
    outcomes = {_judge(log, offset, _flipped(log, offset, rng.randrange(8))) for offset in offsets}
    assert outcomes == {"refused"}


@pytest.mark.long
@pytest.mark.parametrize("record", [MIDDLE, LAST], ids=["middle", "last"])
def test_every_payload_bit_flipped_is_caught_by_the_framing(log: WrittenLog, record: int) -> None:
    """Every bit, through the record scan alone: the store's decision without its I/O.
    About 16,000 scans, 8 s on the 2-core test machine, so in the long suite."""
    start, end = log.extent(record)
    buf = bytearray(log.pristine[: log.end + SECTOR])
    for offset in range(start + HEADER.size, end):
        for bit in range(8):
            buf[offset] ^= 1 << bit
            with pytest.raises(CorruptRecordError) as err:
                scan_records(bytes(buf), str(log.path))
            assert err.value.offset == start
            buf[offset] ^= 1 << bit


@pytest.mark.parametrize("record", [MIDDLE, LAST], ids=["middle", "last"])
def test_each_zeroed_sector(log: WrittenLog, record: int) -> None:
    """A sector the record shares with the one before held acknowledged data: refused. A
    sector of the last record's alone may be one its write never landed: that record
    alone is lost (it was never acknowledged if that is what happened)."""
    start, end = log.extent(record)
    sectors = range(start // SECTOR * SECTOR, end, SECTOR)
    assert len(sectors) >= 3
    for sector in sectors:
        outcome = _judge(log, sector, bytes(SECTOR))
        assert outcome == ("torn" if record == LAST and sector >= start else "refused"), sector


@pytest.mark.parametrize("bit", range(12, 28))
def test_a_damaged_length_in_the_middle_refuses_to_open(log: WrittenLog, bit: int) -> None:
    """Issue 16's case: bits 12-27 of record 11's length (the record holding entry 11)
    once opened the log with 10 of 40 entries."""
    length_byte = log.offsets[MIDDLE] + 4 + 3 - bit // 8  # big-endian
    assert _judge(log, length_byte, _flipped(log, length_byte, bit % 8)) == "refused"


# ------------------------------------------------------------------- format version 1


V1_ENTRIES = [
    *(Entry(i, 1, data=(b"entry %d " % i) * 3) for i in range(4, 40)),
    *(Entry(i, 2, data=(b"entry %d " % i) * 3) for i in range(40, 42)),
    Entry(42, 3, data=b"replaces 42 and 43"),
]


@pytest.fixture
def v1_dir(tmp_path: Path) -> Path:
    """A data directory the code before format version 2 wrote: entries 1-3 compacted into
    a snapshot, 40 one-entry appends (4-43), then an append replacing 42 and 43."""
    shutil.copytree(FIXTURES / "v1", tmp_path / "v1")
    return tmp_path / "v1"


def _magics(path: Path) -> list[int]:
    raw = path.read_bytes()
    return [int.from_bytes(raw[o : o + 4], "big") for o, _ in scan_records(raw, str(path)).records]


def test_a_version_1_data_dir_opens_with_everything(v1_dir: Path) -> None:
    assert set(_magics(v1_dir / LOG_FILE)) == {MAGIC_V1}
    with DiskStorage(v1_dir) as store:
        assert store.first_index() == 4
        assert store.load_entries() == V1_ENTRIES
        assert store.load_hard_state() == HardState(3, 2, 40)
        assert store.load_snapshot() == Snapshot(3, 1, b"registry image at 3")


def test_a_version_1_data_dir_is_written_in_version_2_from_then_on(v1_dir: Path) -> None:
    with DiskStorage(v1_dir) as store:
        store.append([Entry(43, 3, data=b"new")])
        store.save_hard_state(HardState(4, 1, 42))
    assert _magics(v1_dir / LOG_FILE) == [MAGIC_V1] * 42 + [MAGIC]
    assert _magics(v1_dir / HARD_STATE_FILE) == [MAGIC]
    with DiskStorage(v1_dir) as store:
        assert store.load_entries() == [*V1_ENTRIES, Entry(43, 3, data=b"new")]
        store.save_snapshot(Snapshot(10, 1, b"image at 10"))
        store.compact(10)
    assert set(_magics(v1_dir / LOG_FILE)) == {MAGIC}
    assert _magics(v1_dir / SNAPSHOT_FILE) == [MAGIC]
    with DiskStorage(v1_dir) as store:
        assert store.first_index() == 11
        assert store.load_entries() == [*V1_ENTRIES[7:], Entry(43, 3, data=b"new")]
        assert store.load_hard_state() == HardState(4, 1, 42)


def test_a_damaged_length_in_a_version_1_log_refuses_to_open(v1_dir: Path) -> None:
    """Version 1 has no header checksum; the valid records after the damage give it away."""
    log_path = v1_dir / LOG_FILE
    pristine = log_path.read_bytes()
    offsets = [o for o, _ in scan_records(pristine, str(log_path)).records]
    record_11 = offsets[11]  # record 0 is the base record
    for bit in range(12, 28):
        damaged = bytearray(pristine)
        damaged[record_11 + 4 + 3 - bit // 8] ^= 1 << (bit % 8)
        log_path.write_bytes(bytes(damaged) + bytes(4096))
        with pytest.raises(CorruptRecordError, match=f"byte offset {record_11}: ") as err:
            DiskStorage(v1_dir)
        assert f"a valid record follows at byte offset {offsets[12]}" in str(err.value)


# ------------------------------------------------------------------- fsync on open


def test_opening_fsyncs_every_file_it_reads_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed during a flush leaves its write in the page cache, where it reads
    back whole: nothing read is relied on until it is on disk."""
    with DiskStorage(tmp_path, create=True) as store:
        store.append([Entry(1, 1)])
        store.save_hard_state(HardState(1, 1, 1))
        store.save_snapshot(Snapshot(1, 1, b""))
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    DiskStorage(tmp_path).close()
    expected = {str(tmp_path / name) for name in (LOG_FILE, HARD_STATE_FILE, SNAPSHOT_FILE)}
    assert expected | {str(tmp_path)} <= set(synced)


# ------------------------------------------------------------------- through `ringleader control`


def _node_data_dir(path: Path) -> Path:
    """A single node's data directory: 40 no-op entries of term 1, each its own record,
    the last one spanning sectors."""
    with DiskStorage(path, create=True) as store:
        for index in range(1, 41):
            store.append([Entry(index, 1, EntryKind.NOOP, _entry_data(index))])
        store.save_hard_state(HardState(1, 1, 0))
    return path


def _control_args(tmp_path: Path, data_dir: Path, port: int) -> list[str]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return args_for(tmp_path, token_file, data_dir=data_dir, port=port)


def test_ringleader_control_on_a_damaged_log_exits_with_one_line(tmp_path: Path) -> None:
    data = _node_data_dir(tmp_path / "data")
    log_path = data / LOG_FILE
    raw = bytearray(log_path.read_bytes())
    record_11 = scan_records(bytes(raw), str(log_path)).records[MIDDLE][0]
    raw[record_11 + 5] ^= 0x10  # bit 20 of its length
    log_path.write_bytes(bytes(raw))
    result = run_control(_control_args(tmp_path, data, free_port()))
    assert result.returncode == 1
    line = assert_one_line_error(
        result, str(log_path), f"byte offset {record_11}: header checksum mismatch",
        "replace this node or restore its data directory", "docs/runbook.md",
    )  # fmt: skip
    assert line.startswith("ringleader control: error: ")


def test_ringleader_control_cuts_a_torn_tail_and_serves(
    tmp_path: Path, procs: ProcessGroup
) -> None:
    data = _node_data_dir(tmp_path / "data")
    log_path = data / LOG_FILE
    raw = log_path.read_bytes()
    last = scan_records(raw, str(log_path)).records[LAST][0]
    lost = (last // SECTOR + 1) * SECTOR  # the last record's second sector never landed
    log_path.write_bytes(raw[:lost] + bytes(SECTOR) + raw[lost + SECTOR :])
    port = free_port()
    node = procs.ringleader(["control", *_control_args(tmp_path, data, port)], port, name="control")
    node.wait_port()

    def ready() -> bool:
        try:
            return httpx.get(f"http://{LOOPBACK}:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 20, "the node to elect itself and apply its log")
    assert node.terminate() == 0
    assert "torn tail" in node.log_path.read_text()
    with DiskStorage(data) as store:
        entries = store.load_entries()
    assert [e.index for e in entries[:LAST]] == list(range(1, 40))
    assert entries[LAST].term > 1  # entry 40 is the new leader's, not the torn one
