"""`ringleader proxy --workers N`: one proxy to the outside, however many processes inside."""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import ProcessGroup, Proxy, memcached_url, wait_until


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status  # exited; only waiting to be reaped


def worker_pids(proxy: Proxy) -> list[int]:
    # multiprocessing's spawn start method runs workers through spawn_main; the supervisor's
    # other child is multiprocessing's resource tracker.
    return sorted(p for p in children(proxy.process.pid) if "spawn_main" in cmdline(p))


def metric(proxy: Proxy, name: str) -> float:
    text = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def send(proxy: Proxy, count: int) -> None:
    """`count` GETs on fresh connections from several threads, so both workers accept some."""

    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)

    def one(i: int) -> int:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /v1/kv/key-%d HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n" % i)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        return int(reply.split(b" ", 2)[1])

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(one, range(count))) == {404}


@pytest.fixture
def proxy(procs: ProcessGroup) -> Proxy:
    mc = procs.memcached()
    return procs.proxy([memcached_url(mc)], "--workers", "2")


RESPONSES = "ringleader_proxy_responses_total"


def bytes_read(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/<pid>/io")


def test_metrics_report_the_total_across_workers(proxy: Proxy) -> None:
    workers = worker_pids(proxy)
    assert len(workers) == 2
    assert metric(proxy, "ringleader_proxy_workers") == 2
    before = [bytes_read(p) for p in workers]
    sent = 0

    def both_served() -> bool:
        nonlocal sent
        send(proxy, 100)
        sent += 100
        served = [bytes_read(p) - b for p, b in zip(workers, before, strict=True)]
        return min(served) > 20 * 70

    # Both workers serve part of the traffic (each request is ~70 bytes read), so one
    # worker's share cannot add up to the total. Which worker accepts a connection is the
    # kernel's choice, and on a loaded machine one can take a whole round: send rounds
    # until each has its share.
    wait_until(both_served, 30.0, "both workers to serve part of the traffic")
    # Each worker reports on its own schedule; poll until the merged total arrives.
    seen: list[float] = []

    def reported() -> bool:
        seen.append(metric(proxy, RESPONSES))
        return seen[-1] >= sent

    wait_until(reported, 5.0, f"{sent} responses in /metrics")
    assert max(seen) == sent, seen  # the total, never more; a share would stay below


def test_a_killed_worker_is_restarted_and_counts_never_go_down(proxy: Proxy) -> None:
    send(proxy, 100)
    wait_until(lambda: metric(proxy, RESPONSES) == 100, 5.0, "100 responses in /metrics")
    victim, survivor = worker_pids(proxy)
    os.kill(victim, signal.SIGKILL)

    history: list[tuple[float, float, float]] = []

    def restarted() -> bool:
        sample = (metric(proxy, "ringleader_proxy_workers"),
                  metric(proxy, "ringleader_proxy_worker_restarts_total"),
                  metric(proxy, RESPONSES))  # fmt: skip
        history.append(sample)
        return sample[0] == 2 and sample[1] == 1 and len(worker_pids(proxy)) == 2

    wait_until(restarted, 15.0, "the killed worker to be replaced")
    assert min(responses for _, _, responses in history) >= 100, history
    pids = worker_pids(proxy)
    assert survivor in pids
    assert victim not in pids
    proxy.wait_ready()
    send(proxy, 50)
    wait_until(lambda: metric(proxy, RESPONSES) == 150, 5.0, "150 responses in /metrics")


def test_sigterm_exits_zero_and_leaves_no_child_processes(proxy: Proxy) -> None:
    pid = proxy.process.pid
    descendants = children(pid)
    descendants += [g for c in descendants for g in children(c)]
    assert len(worker_pids(proxy)) == 2
    started = time.monotonic()
    assert proxy.process.terminate(timeout=15) == 0
    assert time.monotonic() - started < 10
    wait_until(lambda: all(gone(p) for p in descendants), 5.0,
               f"children {descendants} of the proxy to exit")  # fmt: skip
