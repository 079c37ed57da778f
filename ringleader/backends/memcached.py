"""memcached text protocol client.

Replies are parsed without knowing the command: a reply is either zero or more `VALUE`
blocks closed by `END`, or one line. That makes the parser fit the pipeline's FIFO.
"""

from __future__ import annotations

import time
from typing import Any

from ringleader.backends.base import ClientSettings
from ringleader.backends.errors import BackendError, BackendProtocolError, BackendRejected
from ringleader.backends.pipeline import ConnectionPool

# memcached reads an exptime above 30 days as an absolute unix time.
_RELATIVE_TTL_LIMIT = 60 * 60 * 24 * 30


class MemcachedReplyParser:
    """Yields `list[bytes]` (the values of a retrieval) or `bytes` (a status line)."""

    __slots__ = ("_buf", "_pos", "_values")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._values: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def gets(self) -> Any:
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n", self._pos)
            if eol < 0:
                return False
            line = bytes(buf[self._pos : eol])
            if line.startswith(b"VALUE "):
                # VALUE <key> <flags> <bytes> [<cas>]
                fields = line.split()
                if len(fields) < 4 or not fields[3].isdigit():
                    raise ValueError(f"bad VALUE line {line[:80]!r}")
                start = eol + 2
                end = start + int(fields[3])
                if len(buf) < end + 2:
                    return False
                self._values.append(bytes(buf[start:end]))
                self._pos = end + 2
                continue
            self._pos = eol + 2
            if line == b"END":
                values, self._values = self._values, []
                return values
            if self._values:
                raise ValueError(f"unexpected {line[:80]!r} inside a retrieval reply")
            return line


def _exptime(ttl: int) -> int:
    return ttl if ttl <= _RELATIVE_TTL_LIMIT else int(time.time()) + ttl


class MemcachedClient:
    def __init__(self, name: str, host: str, port: int, settings: ClientSettings) -> None:
        self._name = name
        self._pool = ConnectionPool(name, host, port, settings, MemcachedReplyParser)

    @property
    def name(self) -> str:
        return self._name

    async def get(self, key: bytes) -> bytes | None:
        reply = await self._pool.request(b"get " + key + b"\r\n")
        if isinstance(reply, list):
            return reply[0] if reply else None
        raise self._unexpected("get", reply)

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        reply = await self._store(b"set", key, value, ttl)
        if reply != b"STORED":
            raise self._unexpected("set", reply)

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        reply = await self._store(b"add", key, value, ttl)
        if reply == b"STORED":
            return True
        if reply == b"NOT_STORED":
            return False
        raise self._unexpected("add", reply)

    async def _store(self, verb: bytes, key: bytes, value: bytes, ttl: int) -> Any:
        header = b"%s %s 0 %d %d\r\n" % (verb, key, _exptime(ttl), len(value))
        return await self._pool.request(header + value + b"\r\n")

    async def delete(self, key: bytes) -> bool:
        reply = await self._pool.request(b"delete " + key + b"\r\n")
        if reply == b"DELETED":
            return True
        if reply == b"NOT_FOUND":
            return False
        raise self._unexpected("delete", reply)

    async def ping(self) -> None:
        reply = await self._pool.request(b"version\r\n")
        if not (isinstance(reply, bytes) and reply.startswith(b"VERSION ")):
            raise self._unexpected("version", reply)

    async def flush(self) -> None:
        reply = await self._pool.request(b"flush_all\r\n")
        if reply != b"OK":
            raise self._unexpected("flush_all", reply)

    async def close(self) -> None:
        await self._pool.close()

    def _unexpected(self, command: str, reply: Any) -> BackendError:
        text = reply.decode("latin-1", "replace") if isinstance(reply, bytes) else repr(reply)
        if text.startswith("SERVER_ERROR object too large"):
            return BackendRejected(self._name, f"{command}: {text[:200]}")
        return BackendProtocolError(self._name, f"{command}: {text[:200]}")
