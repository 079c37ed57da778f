"""Real stacks for the HTTP cache behaviour tests: memcached (or redis) processes, a test
origin (tests/support/origins.py) and `ringleader proxy --origin` subprocesses.

One stack per test module and origin kind keeps the suite fast: `stack` is parametrised
over the origin kinds (nginx, titlecase, raw; $RINGLEADER_TEST_ORIGINS replaces them, e.g.
"uvicorn"), so every test that uses it runs against each. Tests stay independent by using
their own resource names (`name` fixture), which are also their cache keys.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import origins
from tests.support.origins import Origin, selected_kinds
from tests.support.servers import (
    ProcessGroup,
    Proxy,
    ServerProcess,
    memcached_url,
)

PURGE_TOKEN = "purge-secret-token"


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


@contextlib.contextmanager
def running_stack(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Iterator[Stack]:
    """Two memcached, the origin of ``kind`` and one proxy (one worker, PURGE enabled, a
    short origin timeout so that "origin unreachable" tests are quick)."""
    workdir = tmp_path_factory.mktemp(f"httpcache-{kind}")
    group = ProcessGroup(workdir)
    try:
        origin = origins.start_origin(group, kind)
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


@pytest.fixture(scope="module", params=selected_kinds(), ids=selected_kinds())
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running_stack for each origin kind: every test using it runs against each."""
    with running_stack(tmp_path_factory, request.param) as running:
        yield running


@pytest.fixture(scope="module")
def raw_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running_stack in front of the raw origin alone, for the edge replies and timing
    that only it can produce (chunks sent apart, 1xx, bad bytes, status 999)."""
    with running_stack(tmp_path_factory, "raw") as running:
        yield running


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


def seen_headers(stack: Stack, name: str) -> dict[str, str]:
    """The last request the origin got for ``name``: field names lowercased (origins
    record them as they arrived), the last line of a repeated field winning."""
    request = stack.origin.last_request(name)
    return {field.lower(): value for field, value in request["headers"]}
