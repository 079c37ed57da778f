"""HTTP cache benchmarks against Varnish and nginx, on this machine, in one run.

    python -m bench.http_cache [--seconds 10] [--connections 32] [--requests 6000]

1. Hit throughput: wrk on one cached 100-byte object through one proxy worker (memcached
   storage), Varnish (malloc storage) and nginx proxy_cache (one worker process), all in
   front of the same Title-Case origin (tests/support/origins.py, http.server). The
   ratios are the result: absolute numbers drift on a shared machine.
2. Origin offload: the same request stream (seeded, Zipf-like over KEYS objects with a
   short max-age, spread round-robin) through 3 proxies sharing 2 memcached, and through
   3 independent Varnish instances. The origin counts its fetches.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

import httpx

from bench.common import require, table, wrk
from tests.support import origins
from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    ServerProcess,
    free_port,
    memcached_url,
    scratch_dir,
)

HIT_PATH = "/hit/object"
KEYS = 200
# A lifetime longer than the run (sharing alone decides), and one that expires many times.
OFFLOAD_MAX_AGES = (30, 2)
ORIGIN_DELAY = 0.02


def start_origin(group: ProcessGroup) -> str:
    """The Title-Case http.server origin: header names as nginx, Apache and Node send them."""
    return origins.start_origin(group, "titlecase").url


def configure(origin: str, name: str, **config: object) -> None:
    httpx.put(f"{origin}/__config/{name}", json=config, timeout=5).raise_for_status()


def origin_fetches(origin: str, name: str) -> int:
    return int(httpx.get(f"{origin}/__stats/{name}", timeout=5).json()["counts"].get("GET", 0))


def varnish(group: ProcessGroup, origin: str) -> str:
    port = free_port()
    workdir = group.workdir / f"varnish-{port}"
    workdir.mkdir()
    os.chmod(workdir, 0o755)
    argv = [require("varnishd"), "-F", "-a", f"{LOOPBACK}:{port}",
            "-b", origin.removeprefix("http://"), "-n", str(workdir), "-s", "malloc,64m",
            "-T", "none"]  # fmt: skip
    proc = ServerProcess("varnish", argv, port, group.workdir / f"varnish-{port}.log").start()
    group.processes.append(proc)
    proc.wait_port(30)
    return f"http://{LOOPBACK}:{port}"


def nginx(group: ProcessGroup, origin: str) -> str:
    port = free_port()
    workdir = group.workdir / f"nginx-{port}"
    (workdir / "cache").mkdir(parents=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=bench:10m max_size=64m;
    upstream origin {{ server {origin.removeprefix("http://")}; keepalive 32; }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
        }}
    }}
}}
""")
    argv = [require("nginx"), "-c", str(conf), "-p", str(workdir)]
    proc = ServerProcess("nginx", argv, port, group.workdir / f"nginx-{port}.log").start()
    group.processes.append(proc)
    proc.wait_port()
    return f"http://{LOOPBACK}:{port}"


def warm(url: str) -> None:
    for _ in range(3):
        response = httpx.get(url, timeout=5)
        response.raise_for_status()


def hit_throughput(group: ProcessGroup, origin: str, seconds: int, connections: int) -> str:
    configure(origin, "hit", headers=[["cache-control", "max-age=3600"]], size=100)
    cache = group.memcached()
    proxy = group.proxy([memcached_url(cache)], "--origin", origin, "--workers", "1")
    targets = {
        "ringleader (1 worker, memcached)": proxy.url,
        "Varnish 7.1 (malloc)": varnish(group, origin),
        "nginx 1.22 proxy_cache (1 worker)": nginx(group, origin),
    }
    results: dict[str, dict[str, float]] = {}
    for label, base in targets.items():
        warm(base + HIT_PATH)
        results[label] = wrk(base + HIT_PATH, seconds, connections)
        print(f"{label}: {results[label]['rps']:.0f} req/s", file=sys.stderr)
    ours = results["ringleader (1 worker, memcached)"]["rps"]
    rows = [
        (label, f"{r['rps']:.0f}", f"{r['p50_s'] * 1e3:.2f}", f"{ours / r['rps']:.2f}")
        for label, r in results.items()
    ]
    return table(rows, ("server", "hit req/s", "p50 ms", "ringleader / this"))


def request_stream(requests: int, seed: int) -> list[int]:
    """Object indexes, Zipf-like (s = 1): a few hot objects and a long tail."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(KEYS)]
    return rng.choices(range(KEYS), weights, k=requests)


async def replay(frontends: list[str], name: str, stream: list[int], concurrency: int) -> int:
    """Send ``stream`` round-robin over ``frontends``; returns the non-2xx count."""
    queue = list(enumerate(stream))
    failures = 0
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker() -> None:
            nonlocal failures
            while queue:
                i, obj = queue.pop()
                response = await client.get(f"{frontends[i % len(frontends)]}/{name}/{obj}")
                failures += response.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def offload(group: ProcessGroup, origin: str, requests: int, concurrency: int, seed: int) -> str:
    stream = request_stream(requests, seed)
    caches = [group.memcached(), group.memcached()]
    proxies = [group.proxy([memcached_url(c) for c in caches], "--origin", origin)
               for _ in range(3)]  # fmt: skip
    fleets = {
        "3 ringleader proxies, shared memcached": [p.url for p in proxies],
        "3 independent Varnish instances": [varnish(group, origin) for _ in range(3)],
    }
    rows = []
    for max_age in OFFLOAD_MAX_AGES:
        for i, (label, frontends) in enumerate(fleets.items()):
            name = f"off{max_age}x{i}"
            configure(origin, name, headers=[["cache-control", f"max-age={max_age}"]],
                      size=100, delay=ORIGIN_DELAY)  # fmt: skip
            started = time.monotonic()
            failures = asyncio.run(replay(frontends, name, stream, concurrency))
            elapsed = time.monotonic() - started
            fetches = origin_fetches(origin, name)
            print(f"{label}, max-age={max_age}: {fetches} fetches", file=sys.stderr)
            rows.append((label, str(max_age), str(len(set(stream))), str(fetches),
                         f"{fetches / requests:.3f}", f"{elapsed:.1f}", str(failures)))  # fmt: skip
    return table(rows, ("fleet", "max-age", "distinct objects", "origin fetches",
                        "fetches/request", "seconds", "non-200"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--part", choices=["all", "hits", "offload"], default="all")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    group = ProcessGroup(scratch_dir("bench-http-cache-"))
    try:
        origin = start_origin(group)
        hits = offloaded = ""
        if args.part in ("all", "hits"):
            hits = hit_throughput(group, origin, args.seconds, args.connections)
        if args.part in ("all", "offload"):
            offloaded = offload(group, origin, args.requests, args.concurrency, seed)
    finally:
        # nginx and Varnish fork workers that outlive a SIGKILLed master: stop them first.
        for proc in group.processes:
            if proc.name in ("nginx", "varnish") and proc.alive():
                proc.terminate()
        group.cleanup()
    if hits:
        print(
            f"## Hit throughput (wrk -t1 -c{args.connections} -d{args.seconds}s, 100-byte body)\n"
        )
        print(hits)
    if offloaded:
        print(f"\n## Origin offload ({args.requests} requests, seed {seed}, Zipf over {KEYS} "
          f"objects, origin delay {ORIGIN_DELAY * 1e3:.0f} ms, concurrency "
          f"{args.concurrency})\n")  # fmt: skip
        print(offloaded)


if __name__ == "__main__":
    main()
