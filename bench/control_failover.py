"""Control plane: leader failover time and write throughput, Ringleader vs a 3-node etcd.

    python -m bench.control_failover [--trials 25] [--rounds 3] [--seconds 10]
                                     [--only ringleader|etcd] [--json FILE]

Both clusters run 3 nodes on this machine's loopback with their data directories on the
same filesystem, and are driven by the same asyncio httpx client code:

* Failover: with the cluster settled (a leader every node agrees on, every node caught up),
  SIGKILL the leader, then start a write attempt every 20 ms, round-robin over the two
  survivors, each with a 5 s timeout; the failover time is from the kill to the first
  acknowledged write. Then the killed node is restarted and the cluster settles again.
* Throughput: N concurrent workers each send writes back to back to the leader for a fixed
  time; acknowledged writes per second and latency percentiles. Both clusters are up at
  once, and each concurrency is measured in rounds of back-to-back slices that alternate
  the systems (A B, B A, A B...): drift in the shared machine's speed, which is +-10%
  between minutes, lands on both members of a pair alike. While one system is measured the
  other's processes are stopped (SIGSTOP), so its heartbeats take no CPU (idle, Ringleader's
  three nodes use 7% of a core and etcd's 4%); resumed, it settles before it is measured.
  The figure is the median over rounds, and each round's ratio is printed.

The writes: Ringleader `POST /v1/pools/default/backends/{name}/drain|activate` (each worker
toggles its own backend; a committed, fsynced Raft command, acknowledged once applied on the
leader). etcd: `POST /v3/kv/put` through its HTTP/JSON gateway with a 100-byte value, each
worker on its own key. etcd 3.4 (Debian etcd-server) runs with default settings (heartbeat
100 ms, election timeout 1000 ms); Ringleader with its defaults (20 ms ticks, heartbeat 40 ms,
election timeout 200-400 ms, pre-vote and check-quorum).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGCONT, SIGSTOP
from typing import Any, Protocol

import httpx

from bench.common import require, table
from tests.support.control_cluster import ControlCluster, backend_url
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port, wait_until

CONCURRENCIES = (1, 64)
ATTEMPT_EVERY = 0.02
ATTEMPT_TIMEOUT = 5.0
FAILOVER_GIVE_UP = 15.0
VALUE = b"v" * 100


class Cluster(Protocol):
    name: str

    def leader(self) -> int: ...
    def settle(self) -> int: ...
    def kill(self, node: int) -> None: ...
    def restart(self, node: int) -> None: ...
    def urls(self) -> dict[int, str]: ...
    def prepare(self, workers: int) -> None: ...
    def write(self, http: httpx.AsyncClient, url: str, worker: int, n: int) -> Any: ...
    def pids(self) -> dict[int, int]: ...


# -- Ringleader ------------------------------------------------------------------------------------


class Ringleader:
    name = "ringleader"

    def __init__(self, group: ProcessGroup, workdir: Path) -> None:
        self.cluster = ControlCluster(group, workdir / "ringleader")
        self.cluster.start()
        self.auth = {"authorization": f"Bearer {self.cluster.token}"}

    def leader(self) -> int:
        return self.cluster.wait_leader(timeout=30)

    def settle(self) -> int:
        found: list[int] = []

        def settled() -> bool:
            statuses = self.cluster.statuses()
            leaders = {s["leader"] for s in statuses.values()}
            if len(statuses) != 3 or len(leaders) != 1:
                return False
            leader = leaders.pop()
            if leader is None or statuses[leader]["role"] != "leader":
                return False
            commit = statuses[leader]["commit_index"]
            found.append(leader)
            return all(s["applied_index"] >= commit for s in statuses.values())

        wait_until(settled, 30, "every node to follow one leader and apply what it committed")
        return found[-1]

    def kill(self, node: int) -> None:
        self.cluster.kill(node)

    def pids(self) -> dict[int, int]:
        return {i: n.process.pid for i, n in self.cluster.nodes.items() if n.process is not None}

    def restart(self, node: int) -> None:
        self.cluster.start_node(node)

    def urls(self) -> dict[int, str]:
        return {i: self.cluster.url(i) for i in self.cluster.nodes}

    def prepare(self, workers: int) -> None:
        for w in range(workers):
            url = backend_url(f"bench-{w}", 20000 + w)
            self.cluster.write_acked("POST", "/v1/pools/default/backends", {"url": url})

    def write(self, http: httpx.AsyncClient, url: str, worker: int, n: int) -> Any:
        action = "drain" if n % 2 == 0 else "activate"
        headers = {**self.auth, "x-request-id": uuid.uuid4().hex}
        return http.post(
            f"{url}/v1/pools/default/backends/bench-{worker}/{action}", headers=headers
        )

    def close(self) -> None:
        self.cluster.close()


# -- etcd ------------------------------------------------------------------------------------------


@dataclass
class EtcdNode:
    id: int
    client_port: int
    peer_port: int
    data_dir: Path
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"


@dataclass
class Etcd:
    group: ProcessGroup
    workdir: Path
    name: str = "etcd"
    nodes: dict[int, EtcdNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.binary = require("etcd")
        for i in (1, 2, 3):
            data = self.workdir / "etcd" / f"node-{i}"
            data.parent.mkdir(parents=True, exist_ok=True)
            self.nodes[i] = EtcdNode(i, free_port(), free_port(), data)
        self.initial = ",".join(
            f"n{n.id}=http://{LOOPBACK}:{n.peer_port}" for n in self.nodes.values()
        )
        self.http = httpx.Client(timeout=1.0)
        for i in self.nodes:
            self.restart(i, wait=False)
        for n in self.nodes.values():
            assert n.process is not None
            n.process.wait_port(30)
        self.leader()

    def restart(self, node: int, wait: bool = True) -> None:
        n = self.nodes[node]
        argv = [self.binary, "--name", f"n{n.id}", "--data-dir", str(n.data_dir),
                "--listen-client-urls", n.url, "--advertise-client-urls", n.url,
                "--listen-peer-urls", f"http://{LOOPBACK}:{n.peer_port}",
                "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{n.peer_port}",
                "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "bench"]  # fmt: skip
        n.process = self.group.spawn(f"etcd-{node}", argv, n.client_port)
        if wait:
            n.process.wait_port(30)

    def _status(self, node: int) -> dict[str, Any] | None:
        try:
            r = self.http.post(self.nodes[node].url + "/v3/maintenance/status", json={})
            return dict(r.json()) if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def _ids(self) -> dict[int, dict[str, Any]]:
        return {
            i: s for i in self.nodes
            if (p := self.nodes[i].process) is not None and p.alive()
            and (s := self._status(i)) is not None
        }  # fmt: skip

    def leader(self) -> int:
        found: list[int] = []

        def agreed() -> bool:
            statuses = self._ids()
            for i, s in statuses.items():
                if s.get("leader") and s["leader"] == s["header"]["member_id"]:
                    agree = [j for j, t in statuses.items() if t.get("leader") == s["leader"]]
                    if len(agree) >= 2:
                        found.append(i)
                        return True
            return False

        wait_until(agreed, 30, "an etcd leader")
        return found[-1]

    def settle(self) -> int:
        found: list[int] = []

        def settled() -> bool:
            statuses = self._ids()
            members = {s.get("leader") for s in statuses.values()}
            if len(statuses) != 3 or len(members) != 1:
                return False
            member = members.pop()
            leaders = [i for i, s in statuses.items() if s["header"]["member_id"] == member]
            if not member or not leaders:
                return False
            index = int(statuses[leaders[0]].get("raftIndex", 0)) - 1
            found.append(leaders[0])
            return all(
                int(s.get("raftAppliedIndex", s.get("raftIndex", 0))) >= index
                for s in statuses.values()
            )

        wait_until(settled, 30, "every etcd member to follow one leader and catch up")
        return found[-1]

    def kill(self, node: int) -> None:
        proc = self.nodes[node].process
        assert proc is not None
        proc.kill()

    def urls(self) -> dict[int, str]:
        return {i: n.url for i, n in self.nodes.items()}

    def pids(self) -> dict[int, int]:
        return {i: n.process.pid for i, n in self.nodes.items() if n.process is not None}

    def prepare(self, workers: int) -> None:
        pass

    def write(self, http: httpx.AsyncClient, url: str, worker: int, n: int) -> Any:
        body = {"key": base64.b64encode(f"bench/{worker}".encode()).decode(),
                "value": base64.b64encode(VALUE).decode()}  # fmt: skip
        return http.post(f"{url}/v3/kv/put", content=json.dumps(body))

    def close(self) -> None:
        self.http.close()


# -- measurements ----------------------------------------------------------------------------------


async def failover_once(system: Cluster) -> float:
    leader = system.settle()
    survivors = [u for i, u in system.urls().items() if i != leader]
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Task[None]] = []

    async def attempt(url: str, n: int) -> None:
        # One client (one connection) per attempt: httpx's shared pool degrades badly with
        # many requests in flight, which would penalize whichever system blocks longer.
        async with httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT) as http:
            try:
                r = await system.write(http, url, 0, n)
            except httpx.HTTPError:
                return
        if r.status_code == 200 and not done.done():
            done.set_result(time.perf_counter())
        elif 400 <= r.status_code < 500 and not done.done():
            done.set_exception(RuntimeError(f"{system.name}: write refused: {r.text}"))

    started = time.perf_counter()
    system.kill(leader)
    n = 0
    while not done.done() and time.perf_counter() - started < FAILOVER_GIVE_UP:
        tasks.append(asyncio.create_task(attempt(survivors[n % len(survivors)], n)))
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), ATTEMPT_EVERY)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if not done.done():
        raise RuntimeError(f"{system.name}: no write acknowledged {FAILOVER_GIVE_UP}s after kill")
    elapsed = done.result() - started
    system.restart(leader)
    return elapsed


async def throughput(system: Cluster, workers: int, seconds: float) -> dict[str, float]:
    leader = system.settle()
    url = system.urls()[leader]
    system.prepare(workers)
    latencies: list[float] = []
    errors = 0
    # One client, so one keep-alive connection, per worker (see failover_once).
    clients = [httpx.AsyncClient(timeout=10.0) for _ in range(workers)]
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                r = await system.write(clients[w], url, w, n)
            except httpx.HTTPError:
                errors += 1
                continue
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1
            n += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    latencies.sort()
    return {
        "writes_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": errors,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def failover(system: Cluster, trials: int) -> dict[str, Any]:
    system.prepare(1)
    times = []
    for trial in range(trials):
        t = asyncio.run(failover_once(system))
        times.append(t)
        print(f"  {system.name} failover trial {trial + 1}/{trials}: {t:.3f}s", flush=True)
    return {
        "failover_s": times,
        "failover_median_s": statistics.median(times),
        "failover_p99_s": percentile(times, 0.99),
        "failover_max_s": max(times),
    }


def paired_throughputs(
    names: list[str], workdir: Path, rounds: int, seconds: float
) -> dict[str, list[dict[str, dict[str, float]]]]:
    """For each system, one dict per round: concurrency key to that slice's throughput."""
    measured: dict[str, list[dict[str, dict[str, float]]]] = {
        name: [{} for _ in range(rounds)] for name in names
    }
    with contextlib.ExitStack() as stack:
        systems = {name: stack.enter_context(running(name, workdir / f"throughput-{name}"))
                   for name in names}  # fmt: skip
        try:
            for c in CONCURRENCIES:
                for i in range(rounds):
                    for name in names if i % 2 == 0 else names[::-1]:
                        for other, system in systems.items():
                            signal_nodes(system, SIGCONT if other == name else SIGSTOP)
                        result = asyncio.run(throughput(systems[name], c, seconds))
                        measured[name][i][f"c{c}"] = result
                        print(f"  {name} throughput c={c} round {i + 1}/{rounds}: {result}",
                              flush=True)  # fmt: skip
        finally:
            for system in systems.values():
                signal_nodes(system, SIGCONT)
    return measured


def signal_nodes(system: Cluster, sig: int) -> None:
    for pid in system.pids().values():
        os.kill(pid, sig)


def median_round(rounds: list[dict[str, dict[str, float]]], key: str) -> dict[str, float]:
    """The round with the median write rate (its latencies are that round's)."""
    ordered = sorted((r[key] for r in rounds), key=lambda m: m["writes_per_s"])
    return ordered[(len(ordered) - 1) // 2]


@contextlib.contextmanager
def running(name: str, workdir: Path) -> Iterator[Any]:
    """A fresh 3-node cluster of `name`, stopped afterwards."""
    workdir.mkdir(parents=True)
    group = ProcessGroup(workdir)
    system: Any = None
    try:
        system = Ringleader(group, workdir) if name == "ringleader" else Etcd(group, workdir)
        print(f"{name}: cluster up", flush=True)
        yield system
    finally:
        if system is not None:
            system.close()
        group.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput slices per system and concurrency, alternating "
                             "(default 3)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each throughput measurement (default 10)")
    parser.add_argument("--only", choices=["ringleader", "etcd"])
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = parser.parse_args()
    if args.trials < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--trials and --rounds must be at least 1, and --seconds positive")
    workdir = Path(tempfile.mkdtemp(prefix="bench-control-", dir=os.environ.get("BENCH_DIR")))
    names = [n for n in ("ringleader", "etcd") if args.only in (None, n)]
    results: dict[str, Any] = {}
    for name in names:
        with running(name, workdir / f"failover-{name}") as system:
            results[name] = failover(system, args.trials)
    rounds = paired_throughputs(names, workdir, args.rounds, args.seconds)
    for name in names:
        results[name]["rounds"] = rounds[name]
    for r in results.values():
        for c in CONCURRENCIES:
            r[f"c{c}"] = median_round(r["rounds"], f"c{c}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    rows: list[tuple[str, ...]] = []
    for name, r in results.items():
        rows.append((name, f"{r['failover_median_s']:.3f}", f"{r['failover_p99_s']:.3f}",
                     f"{r['failover_max_s']:.3f}", f"{r['c1']['writes_per_s']:.0f}",
                     f"{r['c1']['p50_ms']:.1f}", f"{r['c64']['writes_per_s']:.0f}",
                     f"{r['c64']['p50_ms']:.1f}", f"{r['c64']['p99_ms']:.1f}"))  # fmt: skip
    header = ("system", "failover median s", "failover p99 s", "max s", "writes/s c=1",
              "p50 ms c=1", "writes/s c=64", "p50 ms c=64", "p99 ms c=64")  # fmt: skip
    print(table(rows, header))
    if {"ringleader", "etcd"} <= set(results):
        rl, et = results["ringleader"], results["etcd"]
        fo = rl["failover_median_s"] / et["failover_median_s"]
        c1 = rl["c1"]["writes_per_s"] / et["c1"]["writes_per_s"]
        c64 = rl["c64"]["writes_per_s"] / et["c64"]["writes_per_s"]
        print(f"ratios ringleader/etcd: failover median {fo:.2f}, c=1 writes {c1:.2f}, "
              f"c=64 writes {c64:.2f}")  # fmt: skip
        for c in CONCURRENCIES:
            per_round = [a[f"c{c}"]["writes_per_s"] / b[f"c{c}"]["writes_per_s"]
                         for a, b in zip(rl["rounds"], et["rounds"], strict=True)]  # fmt: skip
            print(f"c={c} writes ratio by round: " + " ".join(f"{x:.2f}" for x in per_round))
    print(f"logs and data: {workdir}")


if __name__ == "__main__":
    main()
