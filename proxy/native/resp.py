"""RESP2 replies as raw bytes: where one ends, what an array holds, how to write one.

The redis front relays backend replies byte for byte (a status reply stays a status reply,
which a parsed value could not tell from a bulk string), so it frames them without
decoding; only multi-key merges look inside.
"""

from __future__ import annotations

from collections.abc import Iterable

# A status, error or integer line, or a length header, longer than this is not RESP.
MAX_LINE_BYTES = 64 * 1024

_STATUS, _ERROR, _INTEGER, _BULK, _ARRAY = b"+-:$*"

NIL = b"$-1\r\n"
OK = b"+OK\r\n"


def reply_end(buf: bytes, pos: int) -> int:
    """The end of the whole reply that starts at `pos`, or -1 until it is all in `buf`.

    ValueError when the bytes are not RESP2.
    """
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        if len(buf) - pos > MAX_LINE_BYTES:
            raise ValueError(f"no line end within {MAX_LINE_BYTES} bytes")
        return -1
    kind = buf[pos]
    if kind == _BULK:
        length = int(buf[pos + 1 : line_end])
        if length < 0:
            return line_end + 2
        end = line_end + length + 4
        if end > len(buf):
            return -1
        if buf[end - 2 : end] != b"\r\n":
            raise ValueError("a bulk string not followed by CRLF")
        return end
    if kind in (_STATUS, _ERROR, _INTEGER):
        return line_end + 2
    if kind == _ARRAY:
        count = int(buf[pos + 1 : line_end])
        end = line_end + 2
        for _ in range(count):
            end = reply_end(buf, end) if end < len(buf) else -1
            if end < 0:
                return -1
        return end
    raise ValueError(f"unexpected reply type byte {buf[pos : pos + 1]!r}")


def array_items(reply: bytes) -> list[bytes]:
    """The raw elements of a whole array reply (an empty list for a nil array)."""
    header_end = reply.index(b"\r\n")
    count = int(reply[1:header_end])
    items: list[bytes] = []
    pos = header_end + 2
    for _ in range(max(count, 0)):
        end = reply_end(reply, pos)
        items.append(reply[pos:end])
        pos = end
    return items


def integer(reply: bytes) -> int:
    """The value of an integer reply; ValueError for anything else."""
    if reply[:1] != b":":
        raise ValueError(f"not an integer reply: {reply[:40]!r}")
    return int(reply[1:-2])


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(items: Iterable[bytes]) -> bytes:
    """An array of raw replies."""
    parts = list(items)
    return b"*%d\r\n%s" % (len(parts), b"".join(parts))


def error(message: str) -> bytes:
    """An error reply; `message` starts with its code (ERR, NOAUTH, ...) and loses any CR/LF."""
    return b"-%s\r\n" % " ".join(message.split()).encode("utf-8", "replace")


class ReplyFramer:
    """Cuts whole replies out of a backend's byte stream (the `ReplyFramer` of upstream.py)."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf = data
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def gets(self, expect: object = None) -> bytes | bool:
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            return False
        if buf[pos] == _BULK:
            # The common reply, inlined: a GET's value or nil.
            line_end = buf.find(b"\r\n", pos)
            if line_end > 0:
                length = int(buf[pos + 1 : line_end])
                end = line_end + length + 4 if length >= 0 else line_end + 2
                if end > len(buf):
                    return False
                if length >= 0 and buf[end - 2 : end] != b"\r\n":
                    raise ValueError("a bulk string not followed by CRLF")
                self._pos = end
                return buf[pos:end]
        end = reply_end(buf, pos)
        if end < 0:
            return False
        self._pos = end
        return buf[pos:end]
