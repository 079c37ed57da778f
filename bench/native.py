"""The native fronts against nutcracker and the cache server itself, over the same servers
in one run. For redis: `redis-benchmark -t get,set -c 50` without pipelining and with
`-P 16`, keys spread over the servers (`-r`), reporting ops/s, p50 and p99.

    python -m bench.native [--requests 200000] [--rounds 3] [--servers 3]
                           [--front redis|memcached|both]

Rows: redis-server direct (one server), Ringleader with 1 and 2 workers, nutcracker.
Absolute numbers drift on shared machines; the ratios to nutcracker are the result. The
memcached front's run is bench/native_memcached.py, called from here with `--front`.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import require, table
from bench.native_memcached import memcached_bench
from tests.proxy.native.redis_support import answers_ping
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, wait_until

CONNECTIONS = 50
KEYSPACE = 100_000
VALUE_BYTES = 100
PIPELINES = (1, 16)
TESTS = ("SET", "GET")


@dataclass(frozen=True, slots=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float


def redis_benchmark(port: int, requests: int, pipeline: int) -> dict[str, Result]:
    """One redis-benchmark run of SET then GET; test name -> result."""
    argv = [require("redis-benchmark"), "-h", LOOPBACK, "-p", str(port), "-t", "set,get",
            "-c", str(CONNECTIONS), "-n", str(requests), "-P", str(pipeline),
            "-r", str(KEYSPACE), "-d", str(VALUE_BYTES), "--csv"]  # fmt: skip
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600).stdout
    results: dict[str, Result] = {}
    for row in csv.DictReader(io.StringIO(out)):
        results[row["test"]] = Result(
            float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])
        )
    return results


def _ringleader(procs: ProcessGroup, servers: list[int], workers: int) -> int:
    port, admin = free_port(), free_port()
    args = ["proxy", "--redis-listen", f"{LOOPBACK}:{port}", "--admin", f"{LOOPBACK}:{admin}",
            "--workers", str(workers)]  # fmt: skip
    for i, server in enumerate(servers, 1):
        args += ["--backend", f"redis://{LOOPBACK}:{server}/0?name=rd{i}"]
    proc = procs.ringleader(args, port, name=f"ringleader-{workers}w")
    proc.wait_port()
    # Every worker accepts once it has started: wait for their fronts to answer.
    wait_until(lambda: answers_ping(port), 15, "the redis front")
    return port


def _median(runs: list[dict[str, Result]]) -> dict[str, Result]:
    """Per test, the run with the median ops/s (its latencies come with it)."""
    return {test: sorted((run[test] for run in runs), key=lambda r: r.rps)[len(runs) // 2]
            for test in runs[0]}  # fmt: skip


def redis_bench(requests: int, servers: int, repeat: int) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        procs = ProcessGroup(Path(tmp))
        try:
            ports = [procs.redis().port for _ in range(servers)]
            targets = {
                "redis-server direct (1 server)": ports[0],
                "Ringleader, 1 worker": _ringleader(procs, ports, 1),
                "Ringleader, 2 workers": _ringleader(procs, ports, 2),
                "nutcracker": procs.nutcracker(
                    [f"{LOOPBACK}:{p}:1 rd{i}" for i, p in enumerate(ports, 1)], redis=True
                ).port,
            }
            # Rounds go through every target in turn, so that load from elsewhere on a
            # shared machine spreads over all of them; each cell is the median round.
            rounds: dict[tuple[str, int], list[dict[str, Result]]] = {}
            for _ in range(repeat):
                for pipeline in PIPELINES:
                    for name, port in targets.items():
                        run = redis_benchmark(port, requests, pipeline)
                        rounds.setdefault((name, pipeline), []).append(run)
            runs = {cell: _median(results) for cell, results in rounds.items()}
        finally:
            procs.cleanup()
    rows = []
    for name in targets:
        for pipeline in PIPELINES:
            for test in TESTS:
                result = runs[(name, pipeline)][test]
                base = runs[("nutcracker", pipeline)][test].rps
                rows.append((name, test, f"-P {pipeline}", f"{result.rps:,.0f}",
                             f"{result.p50_ms:.3f}", f"{result.p99_ms:.3f}",
                             f"{result.rps / base:.2f}x"))  # fmt: skip
    header = ("target", "test", "pipeline", "ops/s", "p50 ms", "p99 ms", "vs nutcracker")
    command = (f"redis-benchmark -t set,get -c {CONNECTIONS} -n {requests} -P {{1,16}} "
               f"-r {KEYSPACE} -d {VALUE_BYTES}, over {servers} redis-servers; "
               f"median of {repeat} interleaved rounds")  # fmt: skip
    return f"{command}\n\n{table(rows, header)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000, help="per redis-benchmark run")
    parser.add_argument("--servers", type=int, default=3, choices=(2, 3))
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    parser.add_argument("--front", choices=("redis", "memcached", "both"), default="redis")
    parser.add_argument("--seconds", type=float, default=5.0, help="per memcached run")
    args = parser.parse_args()
    if args.front in ("redis", "both"):
        print(redis_bench(args.requests, args.servers, args.rounds))
    if args.front in ("memcached", "both"):
        print(memcached_bench(args.seconds, CONNECTIONS, args.servers))


if __name__ == "__main__":
    main()
