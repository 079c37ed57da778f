"""Real stacks for the HTTP cache behaviour tests: memcached (or redis) processes, the
test origin (tests/support/origin.py) and `ringleader proxy --origin` subprocesses.

One stack per test module keeps the suite fast; tests stay independent by using their
own resource names (`name` fixture), which are also their cache keys.
"""

from __future__ import annotations

import http.cookiejar
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    Proxy,
    ServerProcess,
    free_port,
    memcached_url,
)

PURGE_TOKEN = "purge-secret-token"


@dataclass
class Origin:
    process: ServerProcess
    url: str

    def configure(self, name: str, **config: Any) -> None:
        httpx.put(f"{self.url}/__config/{name}", json=config, timeout=5).raise_for_status()

    def stats(self, name: str) -> dict[str, Any]:
        reply = httpx.get(f"{self.url}/__stats/{name}", timeout=5)
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    def count(self, name: str, method: str = "total") -> int:
        return int(self.stats(name)["counts"].get(method, 0))

    def last_request(self, name: str) -> dict[str, Any]:
        request: dict[str, Any] = self.stats(name)["requests"][-1]
        return request

    @property
    def authority(self) -> str:
        return self.url.removeprefix("http://")


def start_origin(group: ProcessGroup) -> Origin:
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.origin", str(port)]
    proc = ServerProcess("origin", argv, port, group.workdir / f"origin-{port}.log").start()
    group.processes.append(proc)
    proc.wait_port()
    return Origin(proc, f"http://{LOOPBACK}:{port}")


def start_proxy(group: ProcessGroup, backends: list[str], origin: Origin, *extra: str) -> Proxy:
    return group.proxy(backends, "--origin", origin.url, *extra)


def purge_token_file(workdir: Path) -> str:
    path = workdir / "purge-token"
    path.write_text(PURGE_TOKEN + "\n")
    return str(path)


@dataclass
class Stack:
    group: ProcessGroup
    origin: Origin
    caches: list[ServerProcess]
    proxy: Proxy
    client: httpx.Client

    @property
    def backends(self) -> list[str]:
        return [memcached_url(c) for c in self.caches]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two memcached, the origin and one proxy (one worker, PURGE enabled, a short origin
    timeout so that "origin unreachable" tests are quick)."""
    workdir = tmp_path_factory.mktemp("httpcache")
    group = ProcessGroup(workdir)
    try:
        origin = start_origin(group)
        caches = [group.memcached(), group.memcached()]
        proxy = start_proxy(
            group,
            [memcached_url(c) for c in caches],
            origin,
            "--purge-token-file",
            purge_token_file(workdir),
            "--origin-timeout",
            "1.5",
        )
        with client_for(proxy) as client:
            yield Stack(group, origin, caches, proxy, client)
    finally:
        group.cleanup()


def client_for(proxy: Proxy) -> httpx.Client:
    """A client that keeps no cookies: every Cookie a test sends is explicit."""
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(base_url=proxy.url, timeout=10, cookies=jar)


@pytest.fixture
def name() -> str:
    """A resource name no other test uses: the first path segment at the origin."""
    return f"r{uuid.uuid4().hex[:12]}"


def raw_request(url: str, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` as-is on a new connection; everything read until close or timeout."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    chunks: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(payload)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError:
            pass
    return b"".join(chunks)
