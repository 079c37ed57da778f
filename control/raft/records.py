"""Checksummed record framing shared by every file the disk storage writes, and the rule
that tells a torn tail from corruption.

A record (format version 2, the one written) is ``magic "RFT2" (u32) | payload length
(u32) | CRC32 of payload (u32) | CRC32 of the twelve header bytes before it (u32) |
payload``, all big-endian. Version 1, read but never written, is ``magic "RFT1" | length |
CRC32 of payload | payload``: its length is unchecked, so a damaged length in its last
record is indistinguishable from a torn write. Files may hold version-1 records followed by
version-2 ones.

Files are only ever written past their last record, into zero-filled space (the log
reserves it ahead with fallocate) or at the end of the file, one record per write and one
write in flight, each flushed before the next starts; or they are replaced whole by
rename. Sectors are written whole or not at all, and a sector that did not land reads as
zeros. So the only damage a crash can leave is in the last record, with nothing but zeros
after it, and with a missing sector somewhere in it: that is a torn tail, and its record
was never acknowledged. Zeros alone after the last record are free space. Any other damage
is corruption (:class:`CorruptRecordError`, naming the file, the byte offset and the
defect): a damaged record with a valid one after it, a record whose stated end is followed
by data, and a failed record whose every sector was written (a flipped bit, not a lost
write).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from control.raft.errors import CorruptRecordError

MAGIC = 0x52465432
MAGIC_V1 = 0x52465431
HEADER = struct.Struct(">IIII")
HEADER_V1 = struct.Struct(">III")
MAX_PAYLOAD = 256 * 1024 * 1024
SECTOR = 512

_CHECKED = struct.Struct(">III")  # the part of a version-2 header its own CRC covers
_U32 = struct.Struct(">I")
_MAGIC_PREFIX = b"RFT"  # shared by every version's magic


def encode_record(payload: bytes) -> bytes:
    if not 0 < len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"record of {len(payload)} bytes is empty or exceeds {MAX_PAYLOAD}")
    checked = _CHECKED.pack(MAGIC, len(payload), zlib.crc32(payload))
    return checked + _U32.pack(zlib.crc32(checked)) + payload


@dataclass(frozen=True, slots=True)
class Scan:
    """The verified records of a file, each with its byte offset, where they end, and
    whether a torn tail (anything but zeros) follows them."""

    records: list[tuple[int, bytes]]
    end: int
    torn: bool


def scan_records(buf: bytes, path: str) -> Scan:
    """Verifies every record in ``buf``; raises CorruptRecordError unless damage is a torn tail."""
    records: list[tuple[int, bytes]] = []
    off = 0
    while off < len(buf):
        frame = _frame_at(buf, off)
        if isinstance(frame, _Frame) and (payload := _verified_payload(buf, frame)) is not None:
            records.append((off, payload))
            off = frame.end
            continue
        if _zeros(buf, off):
            break
        _refuse_unless_torn(buf, path, off, frame)
        return Scan(records, off, True)
    return Scan(records, off, False)


class _Frame(NamedTuple):
    """A readable header: where its payload starts and ends, and the payload's CRC."""

    start: int
    end: int
    crc: int


def _frame_at(buf: bytes, off: int) -> _Frame | str:
    """The header at ``off``, or what is wrong with it."""
    if len(buf) - off < _U32.size:
        return "header cut short by the end of the file"
    (magic,) = _U32.unpack_from(buf, off)
    if magic == MAGIC:
        if len(buf) - off < HEADER.size:
            return "header cut short by the end of the file"
        _, length, crc, header_crc = HEADER.unpack_from(buf, off)
        if zlib.crc32(buf[off : off + _CHECKED.size]) != header_crc:
            return "header checksum mismatch"
        start = off + HEADER.size
    elif magic == MAGIC_V1:
        if len(buf) - off < HEADER_V1.size:
            return "header cut short by the end of the file"
        _, length, crc = HEADER_V1.unpack_from(buf, off)
        start = off + HEADER_V1.size
    else:
        return f"no record header (magic 0x{magic:08x})"
    if not 0 < length <= MAX_PAYLOAD:
        return f"payload length {length} is 0 or exceeds {MAX_PAYLOAD}"
    return _Frame(start, start + length, crc)


def _verified_payload(buf: bytes, frame: _Frame) -> bytes | None:
    if frame.end > len(buf):
        return None
    payload = buf[frame.start : frame.end]
    return payload if zlib.crc32(payload) == frame.crc else None


def _refuse_unless_torn(buf: bytes, path: str, off: int, frame: _Frame | str) -> None:
    """Raises CorruptRecordError unless the failed record at ``off`` is one the last write
    could have left (see the module docstring)."""
    if isinstance(frame, str):
        defect = frame
        # The length is unknown; a torn write that lost the header lost one of its sectors.
        extent = off + HEADER.size
    else:
        past_end = frame.end > len(buf)
        defect = "record runs past the end of the file" if past_end else "payload checksum mismatch"
        extent = frame.end
    later = _next_record(buf, off + 1)
    if later is not None:
        raise CorruptRecordError(
            path, off, f"{defect}, and a valid record follows at byte offset {later}"
        )
    if not isinstance(frame, str) and not _zeros(buf, frame.end):
        data_at = len(buf) - len(buf[frame.end :].lstrip(b"\0"))
        raise CorruptRecordError(
            path, off, f"{defect}, and data follows the record's end at byte offset {data_at}"
        )
    if not _lost_a_sector(buf, off, extent):
        raise CorruptRecordError(
            path, off, f"{defect} though every sector of the record was written (not a torn write)"
        )


def _next_record(buf: bytes, start: int) -> int | None:
    """The offset of the first record at or after ``start`` that verifies, if any."""
    off = buf.find(_MAGIC_PREFIX, start)
    while off != -1:
        frame = _frame_at(buf, off)
        if isinstance(frame, _Frame) and _verified_payload(buf, frame) is not None:
            return off
        off = buf.find(_MAGIC_PREFIX, off + 1)
    return None


def _lost_a_sector(buf: bytes, start: int, end: int) -> bool:
    """Whether some sector's share of ``buf[start:end]`` is all zeros or past the end."""
    if end > len(buf):
        return True
    cut = start
    while cut < end:
        upto = min(end, (cut // SECTOR + 1) * SECTOR)
        if buf.count(0, cut, upto) == upto - cut:
            return True
        cut = upto
    return False


def _zeros(buf: bytes, start: int) -> bool:
    return start >= len(buf) or buf.count(0, start) == len(buf) - start
