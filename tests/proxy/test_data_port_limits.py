"""What one hostile client can cost a real proxy worker (proxy/httpserver.py behind
`ringleader proxy`): every limit has a flag, a default and a test here, and the worker's
memory stays bounded under 200 connections that send 1 MiB of headers or trickle."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import LOOPBACK, ProcessGroup, Proxy, memcached_url, wait_until

LIMITS = (
    "--max-header-bytes", "4096", "--header-timeout", "1", "--idle-timeout", "1",
    "--body-timeout", "1", "--max-connections", "300",
)  # fmt: skip


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    group = ProcessGroup(tmp_path_factory.mktemp("limits"))
    try:
        cache = group.memcached()
        yield group.proxy([memcached_url(cache)], *LIMITS)
    finally:
        group.cleanup()


def connect(proxy: Proxy) -> socket.socket:
    port = int(proxy.url.rsplit(":", 1)[1])
    return socket.create_connection((LOOPBACK, port), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def worker_pid(proxy: Proxy) -> int:
    children = Path(f"/proc/{proxy.process.pid}/task/{proxy.process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    # The supervisor also runs multiprocessing's resource tracker; the worker is named.
    for pid in pids:
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError(f"no worker among {pids}")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_headers_over_the_limit_get_431_without_being_read(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"GET /v1/kv/a HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 8000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_a_slow_head_gets_408_after_the_header_timeout(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/kv/a HTTP/1.1\r\nHost: a\r\n")
        reply = read_all(sock)
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.9 <= elapsed < 5, elapsed


def test_an_idle_keep_alive_connection_is_closed(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"GET /v1/kv/idle HTTP/1.1\r\nHost: a\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 404 ")
        started = time.monotonic()
        assert read_all(sock) == b""  # closed by the proxy, silently
        assert time.monotonic() - started < 5


def test_a_stalled_body_is_cut_after_the_body_timeout(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nxx")
        started = time.monotonic()
        read_all(sock)
        assert time.monotonic() - started < 5
    # Nothing of the partial value was stored.
    with connect(proxy) as sock:
        sock.sendall(b"GET /v1/kv/slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 404 ")


def test_memory_stays_bounded_under_header_floods_and_trickles(tmp_path: Path) -> None:
    """With the default limits: 100 connections send 1 MiB of headers (431 after 32 KiB),
    100 trickle a byte at a time (within the 10 s header timeout)."""
    group = ProcessGroup(tmp_path)
    try:
        cache = group.memcached()
        _flood_and_trickle(group.proxy([memcached_url(cache)]))
    finally:
        group.cleanup()


def _flood_and_trickle(proxy: Proxy) -> None:
    pid = worker_pid(proxy)
    # Warm up first: the first requests load code and open backend connections.
    for i in range(50):
        with connect(proxy) as sock:
            sock.sendall(b"GET /v1/kv/w%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % i)
            read_all(sock)
    before = rss_bytes(pid)
    floods, trickles = [], []
    try:
        for _ in range(100):
            sock = connect(proxy)
            sock.setblocking(False)
            floods.append(sock)
            trickles.append(connect(proxy))
        chunk = b"X-Flood: " + b"f" * 65527 + b"\r\n"
        head = b"GET /v1/kv/a HTTP/1.1\r\nHost: a\r\n"
        for sock in floods:
            try:
                sock.send(head)
                for _ in range(16):  # 1 MiB each, as far as the proxy reads it
                    sock.send(chunk)
            except (BlockingIOError, ConnectionError):
                pass
        for second in range(3):
            for sock in trickles:
                with contextlib.suppress(ConnectionError):
                    sock.send(b"G" if second == 0 else b"E")
            peak = rss_bytes(pid)
            assert peak - before < 20 * 1024 * 1024, f"worker grew {(peak - before) >> 20} MiB"
            time.sleep(0.3)  # the trickle's pace, not synchronization
    finally:
        for sock in floods + trickles:
            sock.close()
    # The worker still serves.
    with connect(proxy) as sock:
        sock.sendall(b"GET /v1/kv/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 404 ")


def test_connections_past_the_limit_are_refused(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    try:
        cache = group.memcached()
        small = group.proxy([memcached_url(cache)], "--max-connections", "3")
        held = [connect(small) for _ in range(3)]
        try:
            wait_until(lambda: _refused(small), 5, "a fourth connection to be refused")
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: not _refused(small), 5, "connections to be accepted again")
    finally:
        group.cleanup()


def _refused(proxy: Proxy) -> bool:
    """A refused connection is answered 503 at once, before it sends anything."""
    with connect(proxy) as sock:
        sock.settimeout(0.5)
        try:
            return sock.recv(100).startswith(b"HTTP/1.1 503 ")
        except TimeoutError:
            return False
