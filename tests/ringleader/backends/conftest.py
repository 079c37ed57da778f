"""Helpers for the backend client tests: real memcached/redis processes and raw probes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from ringleader.backends import CacheClient, ClientSettings
from ringleader.backends.memcached import MemcachedClient
from ringleader.backends.redis import RedisClient
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess

T = TypeVar("T")

# Short timeouts keep the fault tests fast; the values are what the tests bound against.
FAST = ClientSettings(
    connect_timeout=0.3, request_timeout=0.3, reconnect_backoff_min=0.05,
    reconnect_backoff_max=0.2,
)  # fmt: skip


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Backend:
    """One real cache server and a way to build clients for it."""

    kind: str
    procs: ProcessGroup
    proc: ServerProcess

    def client(self, settings: ClientSettings = FAST, name: str = "b", db: int = 0) -> CacheClient:
        if self.kind == "memcached":
            return MemcachedClient(name, LOOPBACK, self.proc.port, settings)
        return RedisClient(name, LOOPBACK, self.proc.port, db, settings)

    def restart(self) -> None:
        """kill -9, then a fresh server on the same port."""
        self.proc.kill()
        start = self.procs.memcached if self.kind == "memcached" else self.procs.redis
        self.proc = start(port=self.proc.port)

    def connections_accepted(self) -> int:
        """How many connections the server has accepted so far, this probe's included."""
        if self.kind == "memcached":
            stats = raw_exchange(self.proc.port, b"stats\r\n", b"END\r\n")
            for line in stats.split(b"\r\n"):
                if line.startswith(b"STAT total_connections "):
                    return int(line.split()[2])
        else:
            info = raw_exchange(self.proc.port, b"INFO stats\r\n", b"\r\n\r\n")
            for line in info.split(b"\r\n"):
                if line.startswith(b"total_connections_received:"):
                    return int(line.split(b":")[1])
        raise AssertionError("connection count not found in the server's stats")


def start_backend(procs: ProcessGroup, kind: str) -> Backend:
    proc = procs.memcached() if kind == "memcached" else procs.redis()
    return Backend(kind, procs, proc)


@pytest.fixture(params=["memcached", "redis"])
def backend(request: pytest.FixtureRequest, procs: ProcessGroup) -> Backend:
    return start_backend(procs, request.param)


def raw_exchange(port: int, payload: bytes, until: bytes, timeout: float = 5.0) -> bytes:
    """Send `payload` on a fresh socket and read until the reply ends with `until`."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(until):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port whose SYNs go unanswered: a listener that never accepts, with a full queue,
    so a connect hangs until the client's own timeout."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect((LOOPBACK, port))
            except TimeoutError:
                break
        else:
            pytest.fail("could not fill the accept queue; connects never hang here")
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def timed(call: Callable[[], Coroutine[Any, Any, T]]) -> tuple[float, T | BaseException]:
    """Elapsed seconds and the result (or the exception) of one call."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result: T | BaseException = await call()
    except Exception as exc:
        result = exc
    return loop.time() - started, result
