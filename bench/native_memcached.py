"""The memcached front against nutcracker and memcached itself, over the same servers in one
run: ops/s from memcslap (Debian's libmemcached-tools), and ops/s with p50/p99 from a
pipelining load generator here (memcslap reports no percentiles).

    python -m bench.native_memcached [--seconds 5] [--connections 50] [--servers 3] [--rounds 3]

Rows: memcached direct (one server), Ringleader with 1 and 2 workers, nutcracker; columns
GET and SET without pipelining and with 16 commands in flight per connection. Absolute
numbers drift on shared machines; the ratios to nutcracker are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import uvloop

from bench.common import require, table
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, memcached_url, wait_until

VALUE = b"v" * 100
KEYS = 10_000
MEMCSLAP_PER_THREAD = 2000
# The load generator's processes: on 2 cores, one per core would starve the proxy.
GENERATOR_PROCESSES = 1


@dataclass(frozen=True, slots=True)
class Result:
    ops: float
    p50_ms: float
    p99_ms: float


def _key(i: int) -> bytes:
    return b"bench:%08x" % (i * 2654435761 % 2**32)


def _request(test: str, i: int) -> bytes:
    key = _key(i)
    if test == "get":
        return b"get " + key + b"\r\n"
    return b"set " + key + b" 0 0 %d\r\n" % len(VALUE) + VALUE + b"\r\n"


class _Client(asyncio.Protocol):
    """One connection sending `depth` requests at a time, the next batch once all are in."""

    def __init__(self, test: str, depth: int, latencies: list[int], seed: int) -> None:
        self._terminator = b"END\r\n" if test == "get" else b"STORED\r\n"
        self._test = test
        self._depth = depth
        self._latencies = latencies
        self._random = random.Random(seed)
        self._transport: asyncio.Transport | None = None
        self._tail = b""
        self._waiting = 0
        self._sent_at = 0
        self.stopped = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        batch = [_request(self._test, self._random.randrange(KEYS)) for _ in range(self._depth)]
        self._waiting = self._depth
        self._sent_at = time.perf_counter_ns()
        self._transport.write(b"".join(batch))

    def data_received(self, data: bytes) -> None:
        data = self._tail + data
        done = data.count(self._terminator)
        cut = data.rfind(self._terminator)
        self._tail = data[cut + len(self._terminator) :] if done else data
        if len(self._tail) > 4096:
            raise RuntimeError(f"unexpected reply: {self._tail[:200]!r}")
        self._waiting -= done
        if self._waiting <= 0:
            elapsed = time.perf_counter_ns() - self._sent_at
            self._latencies.extend([elapsed] * self._depth)
            if not self.stopped:
                self._send()


def _generate(port: int, test: str, connections: int, depth: int, seconds: float,
              seed: int, pipe: Connection) -> None:  # fmt: skip
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        latencies: list[int] = []
        clients = []
        for c in range(connections):
            make = functools.partial(_Client, test, depth, latencies, seed * 1000 + c)
            _, client = await loop.create_connection(make, LOOPBACK, port)
            clients.append(client)
        await asyncio.sleep(0.5)  # warm-up: connections opened, caches primed
        latencies.clear()
        await asyncio.sleep(seconds)
        for client in clients:
            client.stopped = True
        return list(latencies)

    pipe.send(uvloop.run(main()))


def load(port: int, test: str, connections: int, depth: int, seconds: float) -> Result:
    ctx = multiprocessing.get_context("spawn")
    per = max(1, connections // GENERATOR_PROCESSES)
    procs, pipes = [], []
    for p in range(GENERATOR_PROCESSES):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_generate, args=(port, test, per, depth, seconds, p, child))
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    latencies: list[int] = []
    for parent in pipes:
        latencies += parent.recv()
    for proc in procs:
        proc.join(30)
    latencies.sort()
    if not latencies:
        sys.exit(f"bench: no {test} completed against port {port}")
    return Result(
        ops=len(latencies) / seconds,
        p50_ms=latencies[len(latencies) // 2] / 1e6,
        p99_ms=latencies[int(len(latencies) * 0.99)] / 1e6,
    )


_MEMCSLAP = re.compile(r"Time to (?:get|set)\s+(\d+) keys by\s+\d+ threads:\s+([\d.]+) seconds")


def memcslap(port: int, test: str, connections: int, per_thread: int) -> float:
    """ops/s of `memcslap --test TEST` with one thread and connection per `connections`."""
    out = subprocess.run(
        [require("memcslap"), "-s", f"{LOOPBACK}:{port}", "-c", str(connections),
         "-e", str(per_thread), "-t", test],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    match = _MEMCSLAP.search(out)
    if match is None:
        sys.exit(f"bench: cannot parse memcslap output:\n{out}")
    return int(match.group(1)) / float(match.group(2))


def preload(port: int) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        for start in range(0, KEYS, 500):
            batch = range(start, min(start + 500, KEYS))
            writer.write(b"".join(_request("set", i) for i in batch))
            for _ in batch:
                assert await reader.readline() == b"STORED\r\n"
        writer.close()

    asyncio.run(main())


def memcached_bench(seconds: float, connections: int, servers: int, rounds: int = 3) -> str:
    """Runs every cell `rounds` times, interleaved, and returns the median of each as a
    markdown table (preceded by the exact workload)."""
    procs = ProcessGroup(Path(tempfile.mkdtemp(prefix="bench-native-mc-")))
    try:
        caches = [procs.memcached(memory_mb=256) for _ in range(servers)]
        names = [f"mc{i + 1}" for i in range(servers)]
        pairs = list(zip(caches, names, strict=True))
        nut = procs.nutcracker([f"{LOOPBACK}:{c.port}:1 {n}" for c, n in pairs])
        targets = {"memcached direct (1 server)": caches[0].port}
        for workers in (1, 2):
            port, admin = free_port(), free_port()
            args = ["proxy", "--memcached-listen", f"{LOOPBACK}:{port}", "--admin",
                    f"{LOOPBACK}:{admin}", "--workers", str(workers)]  # fmt: skip
            for cache, name in pairs:
                args += ["--backend", memcached_url(cache, name=name)]
            proc = procs.ringleader(args, port, name=f"proxy-{workers}w")
            proc.wait_port()
            # Every worker accepts once it has started: wait for the front to answer.
            wait_until(functools.partial(_answers, port), 30, "the memcached front")
            targets[f"Ringleader, {workers} worker{'s' if workers > 1 else ''}"] = port
        targets["nutcracker"] = nut.port
        preload(nut.port)  # through nutcracker: the placement every proxy shares
        preload(caches[0].port)
        # Rounds go through every target in turn, so that load from elsewhere on a shared
        # machine spreads over all of them; each cell is the median round.
        cells: dict[tuple[str, str], list[Result]] = {}
        for _ in range(rounds):
            for test in ("get", "set"):
                for name, port in targets.items():
                    ops = memcslap(port, test, connections, MEMCSLAP_PER_THREAD)
                    cells.setdefault((name, f"memcslap {test}"), []).append(Result(ops, 0, 0))
                    for depth in (1, 16):
                        result = load(port, test, connections, depth, seconds)
                        cells.setdefault((name, f"{test} -P {depth}"), []).append(result)
    finally:
        procs.cleanup()
    median = {cell: sorted(runs, key=lambda r: r.ops)[len(runs) // 2] for cell, runs in
              cells.items()}  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for name in targets:
        for column in ("memcslap get", "memcslap set", "get -P 1", "set -P 1", "get -P 16",
                       "set -P 16"):  # fmt: skip
            result, base = median[(name, column)], median[("nutcracker", column)]
            latency = ("-", "-") if column.startswith("memcslap") else (
                f"{result.p50_ms:.3f}", f"{result.p99_ms:.3f}")  # fmt: skip
            rows.append((name, column, f"{result.ops:,.0f}", *latency,
                         f"{result.ops / base.ops:.2f}x"))  # fmt: skip
    header = ("target", "test", "ops/s", "p50 ms", "p99 ms", "vs nutcracker")
    command = (f"memcslap -c {connections} -e {MEMCSLAP_PER_THREAD} -t get|set (no "
               f"percentiles); bench.native_memcached's generator: {connections} connections, "
               f"{len(VALUE)}-byte values, {KEYS} keys, {seconds:g} s, 1 or 16 commands in "
               f"flight per connection; over {servers} memcached servers; median of {rounds} "
               "interleaved rounds")  # fmt: skip
    return f"{command}\n\n{table(rows, header)}"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as s:
            s.sendall(b"version\r\n")
            return s.recv(100).startswith(b"VERSION")
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(memcached_bench(args.seconds, args.connections, args.servers, args.rounds))


if __name__ == "__main__":
    main()
