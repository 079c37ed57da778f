"""KV GET hit throughput: one proxy worker against the bare-starlette ceiling and direct
redis access, all on this machine in one run. Also the ring lookup time.

    python -m bench.kv [--seconds 10] [--connections 32]

Absolute numbers drift on shared machines; the ratios are the result.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import require, table, wrk
from ringleader.backend_url import BackendSpec, Protocol
from ringleader.ring import KetamaRing
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, memcached_url, redis_url

VALUE = b"v" * 100
KEY = "benchkey01"


def ring_lookup_median_ns(backends: int = 100, rounds: int = 51, batch: int = 20_000) -> float:
    """Median over rounds of the mean lookup time of a 10-byte key, in nanoseconds."""
    specs = [
        BackendSpec(name=f"10.0.0.{i}:11211", protocol=Protocol.MEMCACHED, host=f"10.0.0.{i}",
                    port=11211)
        for i in range(backends)
    ]  # fmt: skip
    ring = KetamaRing(specs)
    key = b"user:12345"
    assert len(key) == 10
    lookup = ring.lookup
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(batch):
            lookup(key)
        samples.append((time.perf_counter_ns() - started) / batch)
    return statistics.median(samples)


def redis_benchmark(port: int, connections: int, requests: int) -> float:
    out = subprocess.run(
        [require("redis-benchmark"), "-h", LOOPBACK, "-p", str(port), "-t", "get", "-d", "100",
         "-c", str(connections), "-n", str(requests), "-q", "--csv"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    match = re.search(r'"GET","([\d.]+)"', out)
    if match is None:
        sys.exit(f"bench: cannot parse redis-benchmark output:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    group = ProcessGroup(Path(tempfile.mkdtemp(prefix="ringleader-bench-")))
    try:
        results: dict[str, dict[str, float]] = {}
        bare_port = free_port()
        bare = group.spawn(
            "bare", [sys.executable, "-m", "bench.bare_app", f"{LOOPBACK}:{bare_port}"], bare_port
        ).wait_port()
        results["bare starlette (ceiling)"] = wrk(
            f"http://{LOOPBACK}:{bare.port}/v1/kv/{KEY}", args.seconds, args.connections
        )
        for label, server, url in (
            ("memcached", mc := group.memcached(), memcached_url(mc)),
            ("redis", rd := group.redis(), redis_url(rd)),
        ):
            proxy = group.proxy([url], "--workers", "1")
            response = httpx.put(f"{proxy.url}/v1/kv/{KEY}", content=VALUE)
            response.raise_for_status()
            results[f"ringleader proxy -> {label}"] = wrk(
                f"{proxy.url}/v1/kv/{KEY}", args.seconds, args.connections
            )
            proxy.process.terminate()
            if label == "redis":
                results["redis direct (redis-benchmark GET)"] = {
                    "rps": redis_benchmark(server.port, args.connections, 200_000),
                    "p50_s": float("nan"),
                }
        ceiling = results["bare starlette (ceiling)"]["rps"]
        rows = [
            (name, f"{r['rps']:,.0f}", f"{r['rps'] / ceiling:.2f}",
             "-" if r["p50_s"] != r["p50_s"] else f"{r['p50_s'] * 1e3:.2f}")
            for name, r in results.items()
        ]  # fmt: skip
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s, 100-byte value, one proxy worker\n"
        )
        print(table(rows, ("target", "req/s", "ratio to ceiling", "p50 ms")))
        print(f"\nring lookup, 10-byte key, 100 backends: median {ring_lookup_median_ns():.0f} ns")
    finally:
        group.cleanup()


if __name__ == "__main__":
    main()
