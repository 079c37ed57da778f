"""Checksummed record framing shared by every file the disk storage writes.

A record is ``magic (u32) | payload length (u32) | CRC32 of payload (u32) | payload``, all
big-endian. Files are only ever written past their last record (at the end of the file, or
into zero-filled space the log reserves ahead), or replaced whole by rename, so after a
crash the only damage a correct writer can leave is at the end of a file: a prefix of the
last record, or a last record whose bytes did not all land, each with nothing but zeros
after it. That is a torn tail. Zeros alone after the last record are free space, not
damage. Any other failed record is corruption.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from control.raft.errors import CorruptRecordError

HEADER = struct.Struct(">III")
MAGIC = 0x52465431
MAX_PAYLOAD = 256 * 1024 * 1024


def encode_record(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


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
    off, size = 0, len(buf)
    while off < size:
        if size - off < HEADER.size:
            break
        magic, length, crc = HEADER.unpack_from(buf, off)
        if magic != MAGIC or length > MAX_PAYLOAD:
            if _zeros(buf, off + HEADER.size):  # at most a header's worth of damage
                break
            raise CorruptRecordError(path, off, "bad record header")
        end = off + HEADER.size + length
        if end > size:
            break
        payload = buf[off + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            if _zeros(buf, end):
                break
            raise CorruptRecordError(path, off, "checksum mismatch")
        records.append((off, payload))
        off = end
    return Scan(records, off, not _zeros(buf, off))


def _zeros(buf: bytes, start: int) -> bool:
    return buf.count(0, start) == len(buf) - start
