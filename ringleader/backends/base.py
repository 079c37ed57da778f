"""The client interface the router uses, and the settings every client shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ClientSettings:
    # The proxy's come from its settings table (`--connect-timeout`, `--request-timeout`).
    connect_timeout: float
    request_timeout: float
    # Pipelined connections per backend and worker. One is enough on loopback: the
    # connection multiplexes every in-flight request (see BENCHMARKS.md).
    connections: int = 1
    # After a failed connection the client fails fast for a while instead of making every
    # request wait out a timeout; the window doubles per failure up to the cap.
    reconnect_backoff_min: float = 0.05
    reconnect_backoff_max: float = 0.5


class CacheClient(Protocol):
    """One backend. Every method raises `BackendError` when the backend cannot answer."""

    @property
    def name(self) -> str: ...

    async def get(self, key: bytes) -> bytes | None: ...

    async def set(self, key: bytes, value: bytes, ttl: int) -> None:
        """Store unconditionally; `ttl` in seconds, 0 for no expiry."""
        ...

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        """Store only if absent; True when stored."""
        ...

    async def delete(self, key: bytes) -> bool:
        """True when the key existed."""
        ...

    async def ping(self) -> None: ...

    async def flush(self) -> None:
        """Drop every item on the backend (its whole database, for redis)."""
        ...

    async def close(self) -> None: ...
