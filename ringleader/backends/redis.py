"""redis RESP client: hiredis parses replies and packs commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis

from ringleader.backends.base import ClientSettings
from ringleader.backends.errors import BackendProtocolError
from ringleader.backends.pipeline import ConnectionPool, PipelinedConnection

# hiredis' stub types pack_command's argument as a 1-tuple; it takes any number of parts.
_pack: Callable[[tuple[bytes | int, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]


# The password to AUTH with, read when a connection opens (it may live in a file).
PasswordSource = Callable[[], str | None]


class RedisClient:
    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        db: int,
        settings: ClientSettings,
        password: PasswordSource | None = None,
    ) -> None:
        self._name = name
        self._db = db
        self._password = password
        handshake = self._handshake if db or password is not None else None
        self._pool = ConnectionPool(name, host, port, settings, hiredis.Reader, handshake)

    @property
    def name(self) -> str:
        return self._name

    async def _handshake(self, conn: PipelinedConnection) -> None:
        if self._password is not None:
            try:
                password = self._password()
            except OSError as exc:
                raise BackendProtocolError(
                    self._name, f"cannot read the password file: {exc.strerror}"
                ) from None
            if password:
                reply = await conn.request(_pack((b"AUTH", password.encode())))
                # The reply names no password, so it can be shown.
                self._expect("AUTH", reply, b"OK")
        if self._db:
            reply = await conn.request(_pack((b"SELECT", self._db)))
            self._expect("SELECT", reply, b"OK")

    async def _call(self, *args: bytes | int) -> Any:
        reply = await self._pool.request(_pack(args))
        if isinstance(reply, hiredis.ReplyError):
            raise BackendProtocolError(self._name, f"{args[0]!r}: {reply}")
        return reply

    async def get(self, key: bytes) -> bytes | None:
        reply = await self._call(b"GET", key)
        if reply is None or isinstance(reply, bytes):
            return reply
        raise BackendProtocolError(self._name, f"GET: unexpected {reply!r}"[:200])

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        if ttl:
            reply = await self._call(b"SET", key, value, b"EX", ttl)
        else:
            reply = await self._call(b"SET", key, value)
        self._expect("SET", reply, b"OK")

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        if ttl:
            reply = await self._call(b"SET", key, value, b"NX", b"EX", ttl)
        else:
            reply = await self._call(b"SET", key, value, b"NX")
        if reply is None:
            return False
        self._expect("SET NX", reply, b"OK")
        return True

    async def delete(self, key: bytes) -> bool:
        reply = await self._call(b"DEL", key)
        if not isinstance(reply, int):
            raise BackendProtocolError(self._name, f"DEL: unexpected {reply!r}"[:200])
        return reply > 0

    async def ping(self) -> None:
        self._expect("PING", await self._call(b"PING"), b"PONG")

    async def flush(self) -> None:
        self._expect("FLUSHDB", await self._call(b"FLUSHDB"), b"OK")

    async def close(self) -> None:
        await self._pool.close()

    def _expect(self, command: str, reply: Any, wanted: bytes) -> None:
        if reply != wanted:
            raise BackendProtocolError(self._name, f"{command}: unexpected {reply!r}"[:200])
