"""Control plane: a rolling restart of all 3 nodes under a steady write load, Ringleader vs
etcd, graceful (SIGTERM) vs crash (SIGKILL).

    python -m bench.control_rolling [--rounds 1] [--rate 50] [--only ringleader|etcd]
                                    [--json FILE]

Each round of each mode starts a fresh 3-node cluster on this machine's loopback (the
clusters of bench/control_failover.py: Ringleader with its defaults, etcd 3.4 from Debian with
its own) and runs a steady open-loop write load on it (tests/support/write_load.py): a
write is due every 1/rate s, up to 32 are in flight, and each is retried on the next node
until one acknowledges it, so an outage shows as a gap, not as a client that stopped asking.
After 2 s of load each node in turn, the followers first and the leader last, is sent the
signal, waited for, started again and waited on until the cluster settles (every node
follows one leader and has applied what it committed); 1 s of load follows the last. The
default rate, 50 writes/s, stays below saturation on the shared 2-core machine even when
it is busy: two thirds of the writes reach a follower, which forwards them to the leader
through one HTTP client, and at 100/s and load average 12-15 Ringleader fell behind.

Reported, from the first signal on (a fresh cluster's first writes wait on connections,
etcd's for seconds, and the load waits for them to flow): the longest stretch with no write
acknowledged, and the longest within the leader's restart (its signal to the cluster
settling); p50 and p99 latency of the writes due (from when each was due); writes given
up on after 15 s (outcome unknown); and acknowledged writes missing from a linearizable
read afterwards (lost).

The writes: Ringleader adds backend `w{n}` to one of 64 pools (a committed, fsynced Raft
command, acknowledged once applied on the leader; a request id makes a retry apply once).
etcd: `POST /v3/kv/put` of a unique key with a 100-byte value through its JSON gateway.
On SIGTERM a Ringleader leader hands leadership to its most up-to-date follower, and an etcd
3.4 leader transfers leadership too, before they exit.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from bench.common import table
from bench.control_failover import VALUE, Etcd, Ringleader, running
from tests.support.servers import ServerProcess, wait_until
from tests.support.write_load import BackendAdds, LoadResult, SteadyWrites

POOLS = tuple(f"roll-{i}" for i in range(64))
MODES = (("ringleader", signal.SIGTERM), ("ringleader", signal.SIGKILL),
         ("etcd", signal.SIGTERM), ("etcd", signal.SIGKILL))  # fmt: skip
LOAD_BEFORE = 2.0
LOAD_AFTER = 1.0
STOP_TIMEOUT = 30.0


class EtcdPuts:
    """etcd writes: write n puts the key `roll/{run}/{n}`."""

    def __init__(self) -> None:
        self._prefix = f"roll/{uuid.uuid4().hex[:12]}/"

    def _key(self, n: int) -> str:
        return base64.b64encode(f"{self._prefix}{n}".encode()).decode()

    async def __call__(self, http: httpx.AsyncClient, url: str, n: int) -> httpx.Response:
        body = {"key": self._key(n), "value": base64.b64encode(VALUE).decode()}
        return await http.post(f"{url}/v3/kv/put", content=json.dumps(body))

    def missing(self, url: str, acked: Sequence[int]) -> list[int]:
        """Acknowledged writes absent from a linearizable range read of the run's keys."""
        prefix = self._prefix.encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        body = {"key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(end).decode(), "keys_only": True}  # fmt: skip
        r = httpx.post(f"{url}/v3/kv/range", content=json.dumps(body), timeout=30)
        r.raise_for_status()
        present = {base64.b64decode(kv["key"]).decode() for kv in r.json().get("kvs", [])}
        return [n for n in acked if f"{self._prefix}{n}" not in present]


class NodeState(NamedTuple):
    leader: object
    """The leader this node follows, in the system's own terms (a node or member id)."""
    leads: bool
    applied: int
    commit: int


def node_states(system: Any) -> dict[int, NodeState]:
    """What each live, answering node reports."""
    states: dict[int, NodeState] = {}
    if isinstance(system, Ringleader):
        for i, s in system.cluster.statuses().items():
            states[i] = NodeState(s["leader"], s["role"] == "leader", s["applied_index"],
                                  s["commit_index"])  # fmt: skip
        return states
    for i, url in system.urls().items():
        try:
            r = httpx.post(url + "/v3/maintenance/status", json={}, timeout=1.0)
        except httpx.HTTPError:
            continue
        if r.status_code != 200:
            continue
        s = r.json()
        index = int(s.get("raftIndex", 0))
        states[i] = NodeState(s.get("leader"), s.get("leader") == s["header"]["member_id"],
                              int(s.get("raftAppliedIndex", index)), index)  # fmt: skip
    return states


def settle(system: Any) -> int:
    """Waits until every node follows one leader and has applied what that leader had
    committed a moment before (the write load moves commit on meanwhile); returns it."""
    found: list[int] = []

    def settled() -> bool:
        before = node_states(system)
        leaders = [i for i, st in before.items() if st.leads]
        if len(before) != 3 or len({st.leader for st in before.values()}) != 1 or not leaders:
            return False
        commit = before[leaders[0]].commit
        after = node_states(system)
        if len(after) != 3 or any(st.applied < commit for st in after.values()):
            return False
        found.append(leaders[0])
        return True

    wait_until(settled, 60, "every node to follow one leader and catch up")
    return found[-1]


def process_of(system: Any, node: int) -> ServerProcess:
    process: ServerProcess | None
    if isinstance(system, Ringleader):
        process = system.cluster.nodes[node].process
    else:
        process = system.nodes[node].process
    assert process is not None
    return process


def stop_node(system: Any, node: int, sig: signal.Signals) -> float:
    """Sends `sig` and waits for the exit; returns the seconds that took."""
    process = process_of(system, node)
    started = time.perf_counter()
    if sig is signal.SIGKILL:
        process.kill()
    else:
        process.terminate(STOP_TIMEOUT)
    return time.perf_counter() - started


def rolling_restart(name: str, sig: signal.Signals, workdir: Path, rate: float) -> dict[str, Any]:
    with running(name, workdir) as system:
        if isinstance(system, Ringleader):
            for pool in POOLS:
                system.cluster.write_acked("POST", "/v1/pools", {"pool": pool})
            write: BackendAdds | EtcdPuts = BackendAdds(system.cluster.token, POOLS)
        else:
            assert isinstance(system, Etcd)
            write = EtcdPuts()
        leader = settle(system)
        urls = list(system.urls().values())
        load = SteadyWrites(urls, write, every=1 / rate).start()
        restarts: list[dict[str, Any]] = []
        try:
            # A fresh cluster's first writes wait on connections (etcd's gateway: seconds).
            wait_until(lambda: load.acked_count >= rate, 60, "writes flowing")
            time.sleep(LOAD_BEFORE)  # steady load before the first restart, by design
            for node in [*(i for i in system.urls() if i != leader), leader]:
                was_leader = node == leader
                signalled = load.seconds()
                stop_s = stop_node(system, node, sig)
                system.restart(node)
                leader = settle(system)
                restarts.append({"node": node, "was_leader": was_leader, "signalled": signalled,
                                 "stop_s": stop_s, "settled": load.seconds()})  # fmt: skip
                print(f"  {name} {sig.name}: node {node} restarted, leader {leader}", flush=True)
            time.sleep(LOAD_AFTER)
        finally:
            result = load.stop()
        leader = settle(system)
        missing = lost_writes(system, write, leader, result)
    return summary(result, missing, restarts)


def lost_writes(system: Any, write: Any, leader: int, result: LoadResult) -> list[int]:
    if isinstance(write, BackendAdds):

        def names(pool: str) -> set[str]:
            return set(system.cluster.backend_names(leader, pool=pool, timeout=30))

        return write.missing(names, result.acked)
    missing: list[int] = write.missing(system.urls()[leader], result.acked)
    return missing


def summary(
    result: LoadResult, missing: list[int], restarts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The longest gap is taken from the first signal on: connecting and warming up are not
    part of a restart. Each restart's own is over its signal-to-settled window."""
    for restart in restarts:
        gap, _ = result.longest_gap(restart["signalled"], restart["settled"])
        restart["longest_gap_s"] = gap
    since = restarts[0]["signalled"] if restarts else 0.0
    gap, ended = result.longest_gap(since)
    return {
        "longest_gap_s": gap,
        "gap_ended_at_s": ended,
        "leader_restart_gap_s": max(
            (r["longest_gap_s"] for r in restarts if r["was_leader"]), default=0.0
        ),
        "p50_ms": 1000 * result.latency_quantile(0.5, since),
        "p99_ms": 1000 * result.latency_quantile(0.99, since),
        "acked": len(result.acked),
        "unknown": len(result.unacked),
        "lost": len(missing),
        "refusals": result.refusals[:5],
        "restarts": restarts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="rolling restarts per mode")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="writes due per second (default 50)")  # fmt: skip
    parser.add_argument("--only", choices=["ringleader", "etcd"])
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = parser.parse_args()
    if args.rounds < 1 or args.rate <= 0:
        parser.error("--rounds must be at least 1 and --rate positive")
    workdir = Path(tempfile.mkdtemp(prefix="bench-rolling-", dir=os.environ.get("BENCH_DIR")))
    results: dict[str, list[dict[str, Any]]] = {}
    for name, sig in MODES:
        if args.only not in (None, name):
            continue
        key = f"{name} {sig.name}"
        results[key] = []
        for i in range(args.rounds):
            r = rolling_restart(name, sig, workdir / f"{name}-{sig.name}-{i}", args.rate)
            print(f"  {key} round {i + 1}/{args.rounds}: {r}", flush=True)
            results[key].append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    rows: list[tuple[str, ...]] = [
        (key, str(i + 1), f"{r['longest_gap_s']:.3f}", f"{r['leader_restart_gap_s']:.3f}",
         f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r["acked"]), str(r["unknown"]),
         str(r["lost"]))
        for key, rounds in results.items()
        for i, r in enumerate(rounds)
    ]  # fmt: skip
    header = ("system and signal", "round", "longest write gap s", "leader's restart gap s",
              "p50 ms", "p99 ms", "acknowledged", "unknown", "lost")  # fmt: skip
    print(table(rows, header))
    print(f"logs and data: {workdir}")


if __name__ == "__main__":
    main()
