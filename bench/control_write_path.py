"""Control plane: where one write's time goes, Ringleader or etcd, at concurrency 1.

    python -m bench.control_write_path [--system ringleader|etcd] [--writes 2000] [--runs 1]

Starts a fresh 3-node cluster (as bench.control_failover does), sends `--writes` writes one
after another to the leader, and reports the wall time per write with the CPU time per
write of the client and of each node (from /proc/PID/stat). The CPU split shows which
process a change to the write path should make cheaper; the wall time is what it buys.

Single runs drift with the shared machine's speed by several percent, so to compare two
versions of the code run this alternately on each (`--runs 1` each time, several times)
and compare the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import table
from bench.control_failover import running

WARMUP_WRITES = 200


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(system: Any, writes: int) -> dict[str, float]:
    leader = system.settle()
    url = system.urls()[leader]
    system.prepare(1)
    pids = system.pids()
    async with httpx.AsyncClient(timeout=10.0) as http:
        for n in range(WARMUP_WRITES):
            await system.write(http, url, 0, n)
        before = {i: cpu_seconds(pid) for i, pid in pids.items()}
        client_before = time.process_time()
        started = time.perf_counter()
        for n in range(writes):
            response = await system.write(http, url, 0, n)
            if response.status_code != 200:
                raise SystemExit(f"bench: write refused: {response.status_code} {response.text}")
        wall = time.perf_counter() - started
        client = time.process_time() - client_before
    result = {"wall_ms": 1000 * wall / writes, "client_cpu_ms": 1000 * client / writes}
    followers = []
    for i, pid in pids.items():
        per_write = 1000 * (cpu_seconds(pid) - before[i]) / writes
        if i == leader:
            result["leader_cpu_ms"] = per_write
        else:
            followers.append(per_write)
    result["follower_cpu_ms"] = statistics.mean(followers)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=["ringleader", "etcd"], default="ringleader")
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1, help="fresh clusters, one after another")
    args = parser.parse_args()
    if args.writes < 1 or args.runs < 1:
        parser.error("--writes and --runs must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="bench-write-path-", dir=os.environ.get("BENCH_DIR")))
    runs = []
    for i in range(args.runs):
        with running(args.system, workdir / f"run-{i}") as system:
            runs.append(asyncio.run(measure(system, args.writes)))
    keys = ("wall_ms", "client_cpu_ms", "leader_cpu_ms", "follower_cpu_ms")
    rows = [(f"run {i + 1}", *(f"{r[k]:.3f}" for k in keys)) for i, r in enumerate(runs)]
    if len(runs) > 1:
        rows.append(("median", *(f"{statistics.median(r[k] for r in runs):.3f}" for k in keys)))
    header = ("", "wall ms/write", "client CPU ms", "leader CPU ms", "follower CPU ms (mean)")
    print(f"{args.system}, {args.writes} sequential writes per run")
    print(table(rows, header))


if __name__ == "__main__":
    main()
