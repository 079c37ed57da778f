"""Record framing and the rule that tells a torn tail from corruption, on bytes in memory."""

from __future__ import annotations

import zlib
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.raft.errors import CorruptRecordError
from control.raft.records import (
    HEADER,
    HEADER_V1,
    MAGIC,
    MAGIC_V1,
    SECTOR,
    Scan,
    encode_record,
    scan_records,
)

RESERVE = bytes(4096)


def _log(payloads: list[bytes]) -> tuple[bytes, list[int]]:
    """The records of `payloads` back to back, and each one's offset."""
    offsets, data = [], b""
    for payload in payloads:
        offsets.append(len(data))
        data += encode_record(payload)
    return data, offsets


def _forty() -> tuple[bytes, list[int]]:
    return _log([b"entry %d" % i for i in range(1, 41)])


def _flip_bit(data: bytes, offset: int, bit: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1 :]


def _refusal(buf: bytes) -> CorruptRecordError:
    with pytest.raises(CorruptRecordError) as err:
        scan_records(buf, "/data/raft.log")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("/data/raft.log: corrupt record at byte offset ")
    return err.value


def test_a_record_header_carries_its_own_checksum() -> None:
    record = encode_record(b"payload")
    magic, length, crc, header_crc = HEADER.unpack_from(record)
    assert (magic, length, crc) == (MAGIC, 7, zlib.crc32(b"payload"))
    assert header_crc == zlib.crc32(record[:12])
    assert record[HEADER.size :] == b"payload"
    with pytest.raises(ValueError, match="empty"):
        encode_record(b"")


def test_version_1_records_are_read_and_version_2_ones_may_follow() -> None:
    old = HEADER_V1.pack(MAGIC_V1, 3, zlib.crc32(b"old")) + b"old"
    scan = scan_records(old + encode_record(b"new") + RESERVE, "raft.log")
    assert scan.records == [(0, b"old"), (len(old), b"new")]
    assert (scan.end, scan.torn) == (len(old) + HEADER.size + 3, False)


def test_zeros_after_the_last_record_are_free_space() -> None:
    data, offsets = _forty()
    scan = scan_records(data + RESERVE, "raft.log")
    assert [payload for _, payload in scan.records] == [b"entry %d" % i for i in range(1, 41)]
    assert [offset for offset, _ in scan.records] == offsets
    assert (scan.end, scan.torn) == (len(data), False)


@pytest.mark.parametrize("bit", range(12, 28))
def test_a_damaged_length_in_the_middle_refuses_to_start(bit: int) -> None:
    """Issue 16: a flip in bits 12-27 of record 11's length once ran the record into the
    reserve, and the log opened with 10 of 40 entries."""
    data, offsets = _forty()
    length_byte = offsets[10] + 4 + 3 - bit // 8  # big-endian: bit 0 is in the last byte
    err = _refusal(_flip_bit(data, length_byte, bit % 8) + RESERVE)
    assert err.offset == offsets[10]
    assert (
        f"header checksum mismatch, and a valid record follows at byte offset {offsets[11]}"
        in str(err)
    )


def test_a_damaged_length_in_a_version_1_log_refuses_when_records_follow() -> None:
    payloads = [b"entry %d" % i for i in range(1, 41)]
    data = b"".join(HEADER_V1.pack(MAGIC_V1, len(p), zlib.crc32(p)) + p for p in payloads)
    record_11 = sum(HEADER_V1.size + len(p) for p in payloads[:10])
    for bit in range(12, 28):
        err = _refusal(_flip_bit(data, record_11 + 4 + 3 - bit // 8, bit % 8) + RESERVE)
        assert err.offset == record_11


def test_a_header_sector_that_never_landed_is_a_torn_tail() -> None:
    """The last record's first sector is lost, its later sectors landed: the reverse case."""
    data, offsets = _log([b"first", bytes(range(1, 256)) * 8])
    last = offsets[-1]
    boundary = (last // SECTOR + 1) * SECTOR
    damaged = data[:last] + bytes(boundary - last) + data[boundary:]
    scan = scan_records(damaged + RESERVE, "raft.log")
    assert (scan.records, scan.end, scan.torn) == ([(0, b"first")], last, True)


def test_a_record_cut_by_the_end_of_the_file_is_a_torn_tail() -> None:
    data, offsets = _forty()
    for cut in (1, HEADER.size - 2, HEADER.size + 3):
        scan = scan_records(data[: offsets[-1] + cut], "raft.log")
        assert (len(scan.records), scan.end, scan.torn) == (39, offsets[-1], True)


def test_a_flipped_bit_in_the_last_record_is_not_a_torn_write() -> None:
    data, offsets = _forty()
    err = _refusal(_flip_bit(data, len(data) - 1, 0) + RESERVE)
    assert err.offset == offsets[-1]
    assert "payload checksum mismatch though every sector of the record was written" in str(err)


def test_data_after_a_damaged_last_record_is_corruption() -> None:
    data, _ = _forty()
    err = _refusal(_flip_bit(data, len(data) - 1, 0) + b"\x01" + RESERVE)
    assert f"data follows the record's end at byte offset {len(data)}" in str(err)


# Property tests: payloads never contain a zero byte, so no sector of a record is zeros
# unless the damage made it so. derandomize makes every run try the same examples;
# hypothesis prints any failing one.
payload_lists = st.lists(
    st.binary(min_size=1, max_size=1500).map(lambda b: b.replace(b"\0", b"\1")),
    min_size=2, max_size=8,
)  # fmt: skip


def _pieces(start: int, end: int) -> list[tuple[int, int]]:
    """`start`..`end` cut at sector boundaries: the parts a torn write loses or keeps."""
    return list(pairwise([start, *range((start // SECTOR + 1) * SECTOR, end, SECTOR), end]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(payloads=payload_lists, lost=st.lists(st.integers(0, 64), min_size=1, max_size=4))
def test_a_torn_last_write_loses_only_the_last_record(
    payloads: list[bytes], lost: list[int]
) -> None:
    data, offsets = _log(payloads)
    pieces = _pieces(offsets[-1], len(data))
    damaged = bytearray(data)
    for choice in lost:
        start, end = pieces[choice % len(pieces)]
        damaged[start:end] = bytes(end - start)
    scan = scan_records(bytes(damaged) + RESERVE, "raft.log")
    assert scan.records == list(zip(offsets[:-1], payloads[:-1], strict=True))
    assert scan.end == offsets[-1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    payloads=payload_lists, where=st.integers(0), bit=st.integers(0, 7),
    zero_sector=st.booleans(),
)  # fmt: skip
def test_damage_before_the_last_record_never_loses_a_record_silently(
    payloads: list[bytes], where: int, bit: int, zero_sector: bool
) -> None:
    """A flipped bit or a zeroed sector that reaches any record but the last either
    refuses at the first damaged record or, where the damage runs to the end of the
    written data (so the last write could have left it), keeps every record before it."""
    data, offsets = _log(payloads)
    at = where % offsets[-1]
    if zero_sector:
        start = at // SECTOR * SECTOR
        damaged = data[:start] + bytes(len(data[start : start + SECTOR])) + data[start + SECTOR :]
    else:
        start = at
        damaged = _flip_bit(data, at, bit)
    damage_end = start + SECTOR if zero_sector else start + 1
    first_damaged = max(i for i, offset in enumerate(offsets) if offset <= start)
    later_intact = any(offset >= damage_end for offset in offsets[first_damaged + 1 :])
    outcome = _scan_or_refusal(damaged + RESERVE)
    if isinstance(outcome, CorruptRecordError):
        assert outcome.offset == offsets[first_damaged]
    else:
        assert not later_intact, "opened although an intact record follows the damage"
        assert outcome.records == list(zip(offsets, payloads, strict=True))[:first_damaged]


def _scan_or_refusal(buf: bytes) -> Scan | CorruptRecordError:
    try:
        return scan_records(buf, "raft.log")
    except CorruptRecordError as err:
        return err
