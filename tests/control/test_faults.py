"""Fault tests with real `ringleader control` processes: kill -9, SIGSTOP, whole-cluster
crash, network cut-offs through a fault-injecting relay, and a linearizability check of a
concurrent client history under randomized faults.

The register model (for the Wing-Gong-Lowe checker in tests/support/linearizability.py):

* key K is the backend named `reg-K` in pool `default`; its value is the port of that
  backend's URL (`memcached://127.0.0.1:V?name=reg-K`), or None when it is absent/removed.
  Every written value is unique in a run.
* read: `GET /v1/pools/default/backends` (linearizable). A 200 is one read of every key at
  one instant (recorded as one read per key with the same interval).
* add V: `POST /v1/pools/default/backends {"url": ...V...}` is cas(None, V): a 200 means it
  was absent and now holds V (-> True); a 409 duplicate_backend means it held another value
  (-> False). A 200 "unchanged" would mean it already held V, which only a second apply of
  the same unique value could produce: recorded as a read of V, so it shows up as a
  violation.
* remove: `DELETE /v1/pools/default/backends/reg-K`: a 200 is delete; a 404 unknown_backend
  means it was absent, recorded as a read of None.
* Outcomes: a connection refused means the request never left, so the op did not happen
  (fail). Timeouts, resets, 5xx (including 503s that invite a retry) are unknown outcomes:
  the checker may place them anywhere after their invocation, or drop them.

Randomized runs print their seed; set RINGLEADER_TEST_SEED to replay a schedule.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.control_cluster import (
    ControlCluster,
    LinkState,
    ReadFailed,
    backend_url,
    control_cluster,
)
from tests.support.linearizability import History, Ok, check
from tests.support.servers import LOOPBACK, ProcessGroup, wait_until

BACKENDS = "/v1/pools/default/backends"


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Adds uniquely named backends in a thread, one command at a time, each retried with
    one request id until acknowledged or the per-command deadline passes."""

    cluster: ControlCluster
    prefix: str
    deadline: float = 10.0
    acked: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.prefix}")
        self._thread.start()
        return self

    def _run(self) -> None:
        http = httpx.Client(timeout=3.0)
        i = 0
        try:
            while not self._stop.is_set():
                name = f"{self.prefix}{i}"
                i += 1
                if self._write_once(http, name):
                    self.acked.append(name)
                else:
                    self.unknown.append(name)
        finally:
            http.close()

    def _write_once(self, http: httpx.Client, name: str) -> bool:
        request_id = uuid.uuid4().hex
        give_up = time.monotonic() + self.deadline
        attempt = 0
        while time.monotonic() < give_up and not self._stop.is_set():
            node = list(self.cluster.nodes)[attempt % len(self.cluster.nodes)]
            attempt += 1
            try:
                r = http.post(self.cluster.url(node) + BACKENDS, json={"url": backend_url(name)},
                              headers=self.cluster.headers(request_id))  # fmt: skip
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                return True
            assert r.status_code >= 500, r.text  # a 4xx here would be a test bug
        return False

    def wait_acked(self, count: int, timeout: float = 20.0) -> None:
        wait_until(lambda: len(self.acked) >= count, timeout, f"{count} acknowledged writes")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def linearizable_names(cluster: ControlCluster, node: int, timeout: float = 15.0) -> set[str]:
    """A linearizable read at `node`, retried while it answers 503 (no leader known yet)."""
    found: list[set[str]] = []

    def read() -> bool:
        try:
            found.append(set(cluster.backend_names(node)))
        except ReadFailed as exc:
            if exc.status != 503:
                raise
            return False
        return True

    wait_until(read, timeout, f"a linearizable read at node {node}")
    return found[0]


def assert_has_all(cluster: ControlCluster, node: int, names: list[str]) -> None:
    present = linearizable_names(cluster, node)
    missing = [n for n in names if n not in present]
    assert not missing, f"node {node} lost acknowledged writes: {missing[:10]}"


def wait_caught_up(
    cluster: ControlCluster, node: int, names: list[str], timeout: float = 20.0
) -> None:
    def has_all() -> bool:
        try:
            present = set(cluster.backend_names(node, stale=True, timeout=2))
        except (ReadFailed, httpx.HTTPError):
            return False
        return all(n in present for n in names)

    wait_until(has_all, timeout, f"node {node} to apply every acknowledged write")


RAW_READ = (
    f"GET {BACKENDS} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
).encode()


def send_raw_read(port: int) -> socket.socket:
    """Connects and sends a linearizable read; once this returns the request sits in the
    server's socket buffer (the kernel accepts it even while the process is stopped)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=5)
    sock.sendall(RAW_READ)
    return sock


def receive_raw(sock: socket.socket, timeout: float = 15.0) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, OSError):
        return 0, b""
    finally:
        sock.close()
    raw = b"".join(chunks)
    if not raw:
        return 0, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- kill -9 the leader ----------------------------------------------------------------------------


def test_kill_leader_a_new_leader_takes_over_and_keeps_every_acknowledged_write(
    procs: ProcessGroup,
) -> None:
    with control_cluster(procs) as cluster:
        leader = cluster.wait_leader()
        old_term = cluster.statuses()[leader]["term"]
        writer = Writer(cluster, "k").start()
        try:
            writer.wait_acked(15)
            cluster.kill(leader)
            survivors = cluster.followers(leader)
            new_leader = cluster.wait_leader(among=survivors, timeout=10)
            assert new_leader != leader
            assert cluster.statuses([new_leader])[new_leader]["term"] > old_term
            acked_at_kill = len(writer.acked)
            writer.wait_acked(acked_at_kill + 10)
        finally:
            writer.stop()
        for node in survivors:
            assert_has_all(cluster, node, writer.acked)
        cluster.start_node(leader)
        wait_caught_up(cluster, leader, writer.acked)
        assert_has_all(cluster, leader, writer.acked)


# -- SIGSTOP the leader ----------------------------------------------------------------------------


def test_paused_leader_steps_down_on_sigcont_and_serves_no_stale_read(
    procs: ProcessGroup,
) -> None:
    with control_cluster(procs) as cluster:
        leader = cluster.wait_leader()
        cluster.write_acked("POST", BACKENDS, {"url": backend_url("before-pause")})
        old_term = cluster.statuses()[leader]["term"]
        cluster.stop(leader)
        try:
            others = cluster.followers(leader)
            # Longer than an election: the others elect a leader among themselves.
            new_leader = cluster.wait_leader(among=others, timeout=10)
            assert new_leader != leader
            cluster.write_acked("POST", BACKENDS, {"url": backend_url("during-pause")},
                                prefer=others)  # fmt: skip
            # Reads invoked after that write was acknowledged, queued at the paused leader.
            queued = [send_raw_read(cluster.nodes[leader].port) for _ in range(8)]
        finally:
            cluster.cont(leader)
        answers = [receive_raw(sock) for sock in queued]
        # And reads sent right after SIGCONT, while it may still think it leads.
        http = httpx.Client(timeout=5)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                r = http.get(cluster.url(leader) + BACKENDS)
            except httpx.HTTPError:
                continue
            answers.append((r.status_code, r.content))
        http.close()
        served = [body for status, body in answers if status == 200]
        for body in served:
            assert b"during-pause" in body, f"stale read from the deposed leader: {body[:300]!r}"

        def stepped_down() -> bool:
            s = cluster.status(leader)
            return s is not None and s["role"] == "follower" and s["term"] > old_term

        wait_until(stepped_down, 10, f"node {leader} to step down after SIGCONT")
        current = cluster.wait_leader()
        wait_until(lambda: (cluster.status(leader) or {}).get("leader") == current, 10,
                   f"node {leader} to follow the leader")  # fmt: skip
        assert "during-pause" in cluster.backend_names(leader)


# -- kill -9 every node ----------------------------------------------------------------------------


def test_kill_all_three_and_restart_keeps_every_acknowledged_write(procs: ProcessGroup) -> None:
    with control_cluster(procs) as cluster:
        cluster.wait_leader()
        writers = [Writer(cluster, p, deadline=2.0).start() for p in ("x", "y")]
        try:
            for w in writers:
                w.wait_acked(20)
            for node in cluster.nodes:
                cluster.kill(node)
        finally:
            for w in writers:
                w.stop()
        acked = [n for w in writers for n in w.acked]
        assert len(acked) >= 40
        for node in cluster.nodes:
            cluster.start_node(node)
        leader = cluster.wait_leader(timeout=15)
        for node in cluster.nodes:
            assert_has_all(cluster, node, acked)
        after = cluster.write_acked("POST", BACKENDS, {"url": backend_url("after-restart")})
        assert after["ok"] is True
        assert "after-restart" in cluster.backend_names(leader)


# -- cut a node off --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [LinkState.BLACKHOLE, LinkState.REFUSE])
def test_isolated_follower_majority_works_and_it_serves_no_linearizable_read(
    procs: ProcessGroup, mode: LinkState
) -> None:
    with control_cluster(procs, relays=True) as cluster:
        assert cluster.relays is not None
        leader = cluster.wait_leader()
        isolated, other = cluster.followers(leader)
        cluster.write_acked("POST", BACKENDS, {"url": backend_url("before-cut")})
        wait_caught_up(cluster, isolated, ["before-cut"])
        term = cluster.statuses()[leader]["term"]
        cluster.relays.isolate(isolated, mode)
        # The majority keeps committing, through the leader and through the other follower.
        acked = [f"cut-{i}" for i in range(6)]
        for i, name in enumerate(acked):
            via = (leader, other)[i % 2]
            cluster.write_acked("POST", BACKENDS, {"url": backend_url(name)}, prefer=[via])
        assert_has_all(cluster, other, acked)
        # The isolated node answers no linearizable read, wherever the reads go.
        results = []
        for _ in range(3):
            try:
                names = cluster.backend_names(isolated, timeout=4)
            except ReadFailed as exc:
                results.append(exc.status)
            except httpx.HTTPError:
                results.append(0)
            else:
                pytest.fail(f"isolated node served a linearizable read: {names}")
        assert all(s in (0, 503) for s in results)
        # Its local state is behind, and it stops reporting ready.
        assert "cut-0" not in cluster.backend_names(isolated, stale=True)
        wait_until(lambda: cluster.http.get(cluster.url(isolated) + "/readyz").status_code == 503,
                   5, "the isolated node to report not ready")  # fmt: skip
        cluster.relays.heal()
        wait_caught_up(cluster, isolated, acked)
        # Pre-vote: the rejoining node did not disrupt the leader.
        assert cluster.wait_leader() == leader
        assert cluster.statuses()[leader]["term"] == term
        assert_has_all(cluster, isolated, acked)


def test_isolated_leader_is_replaced_and_serves_no_linearizable_read(
    procs: ProcessGroup,
) -> None:
    with control_cluster(procs, relays=True) as cluster:
        assert cluster.relays is not None
        leader = cluster.wait_leader()
        others = cluster.followers(leader)
        cluster.write_acked("POST", BACKENDS, {"url": backend_url("before-cut")})
        reads: list[tuple[float, int, bytes]] = []
        stop = threading.Event()

        def read_from_old_leader() -> None:
            with httpx.Client(timeout=3) as http:
                while not stop.is_set():
                    inv = time.monotonic()
                    try:
                        r = http.get(cluster.url(leader) + BACKENDS)
                    except httpx.HTTPError:
                        continue
                    reads.append((inv, r.status_code, r.content))

        reader = threading.Thread(target=read_from_old_leader)
        cluster.relays.isolate(leader)
        cut_at = time.monotonic()
        reader.start()
        try:
            new_leader = cluster.wait_leader(among=others, timeout=10)
            assert new_leader != leader
            cluster.write_acked("POST", BACKENDS, {"url": backend_url("after-cut")},
                                prefer=others)  # fmt: skip
            acked_at = time.monotonic()

            def deposed() -> bool:
                s = cluster.status(leader)
                return s is not None and s["role"] != "leader"

            wait_until(deposed, 5, "the isolated leader to step down (check-quorum)")
            wait_until(lambda: any(t > acked_at for t, _, _ in reads) or not reader.is_alive(),
                       10, "a read at the old leader after the write")  # fmt: skip
        finally:
            stop.set()
            reader.join(10)
        assert any(inv > acked_at for inv, _, _ in reads)
        # ReadIndex needs a quorum to answer a heartbeat sent after the read arrived: nothing
        # invoked after the cut may be served, stale or not.
        served = [body for inv, status, body in reads if status == 200 and inv > cut_at]
        assert not served, f"the cut-off leader served {len(served)} linearizable reads"
        cluster.relays.heal()
        wait_caught_up(cluster, leader, ["before-cut", "after-cut"])
        current = cluster.wait_leader()
        wait_until(lambda: (cluster.status(leader) or {}).get("leader") == current, 10,
                   f"node {leader} to follow the leader after the heal")  # fmt: skip


def test_one_way_cut_from_followers_to_leader_moves_leadership(procs: ProcessGroup) -> None:
    """The leader can send but hears nothing back: check-quorum must depose it, and the
    followers, which still hear its heartbeats, must nonetheless end up with a working leader."""
    with control_cluster(procs, relays=True) as cluster:
        assert cluster.relays is not None
        leader = cluster.wait_leader()
        for follower in cluster.followers(leader):
            cluster.relays.set(follower, leader, LinkState.BLACKHOLE)
        try:
            acked = cluster.write_acked("POST", BACKENDS, {"url": backend_url("one-way")},
                                        deadline=20)  # fmt: skip
            assert acked["ok"] is True
        finally:
            cluster.relays.heal()
        wait_caught_up(cluster, leader, ["one-way"])
        assert "one-way" in cluster.backend_names(cluster.wait_leader())


# -- linearizability under randomized faults -------------------------------------------------------


# Linearizability is checked key by key: more keys keep each key's share of the
# unknown-outcome writes (and so the search) small as the write rate grows. With 6 keys, one
# 25 s run in twelve left a key with 257 of them, whose search needed 534,106 states (over
# the 500,000 bound; linearizable when replayed without it).
KEYS = tuple("abcdefghijkl")


@dataclass
class RegisterClient:
    """One client thread issuing random register operations against random nodes."""

    index: int
    cluster: ControlCluster
    history: History
    rng: random.Random
    values: Callable[[], int]
    counts: dict[str, int] = field(default_factory=dict)

    def run(self, until: float) -> None:
        with httpx.Client(timeout=httpx.Timeout(3.0, connect=1.0)) as http:
            while time.monotonic() < until:
                node = self.rng.choice(list(self.cluster.nodes))
                roll = self.rng.random()
                key = self.rng.choice(KEYS)
                if roll < 0.4:
                    self.read(http, node)
                elif roll < 0.75:
                    self.add(http, node, key, self.values())
                else:
                    self.remove(http, node, key)

    def bump(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def read(self, http: httpx.Client, node: int) -> None:
        inv = time.monotonic()
        try:
            r = http.get(self.cluster.url(node) + BACKENDS)
        except httpx.HTTPError:
            self.bump("read-error")
            return
        ret = time.monotonic()
        if r.status_code != 200:
            assert r.status_code >= 500, r.text
            self.bump(f"read-{r.status_code}")
            return
        state: dict[str, int | None] = dict.fromkeys(KEYS)
        for b in r.json()["backends"]:
            if b["name"].startswith("reg-") and b["admin"] != "removed":
                state[b["name"][4:]] = int(b["url"].split(":")[2].split("?")[0])
        for key, value in state.items():
            self.history.read(self.index, key, at=inv).ok(value, at=ret)
        self.bump("read-ok")

    def add(self, http: httpx.Client, node: int, key: str, value: int) -> None:
        url = f"memcached://{LOOPBACK}:{value}?name=reg-{key}"
        inv = time.monotonic()
        try:
            r = http.post(self.cluster.url(node) + BACKENDS, json={"url": url},
                          headers=self.cluster.headers())  # fmt: skip
        except httpx.ConnectError:
            self.bump("write-refused")  # never sent: never happened
            return
        except httpx.HTTPError:
            self.history.cas(self.index, key, None, value, at=inv).unknown()
            self.bump("write-unknown")
            return
        ret = time.monotonic()
        if r.status_code == 200 and r.json().get("unchanged"):
            self.history.read(self.index, key, at=inv).ok(value, at=ret)
        elif r.status_code == 200:
            self.history.cas(self.index, key, None, value, at=inv).ok(True, at=ret)
        elif r.status_code == 409:
            self.history.cas(self.index, key, None, value, at=inv).ok(False, at=ret)
        else:
            assert r.status_code >= 500, r.text
            self.history.cas(self.index, key, None, value, at=inv).unknown()
            self.bump("write-unknown")
            return
        self.bump("write-ok")

    def remove(self, http: httpx.Client, node: int, key: str) -> None:
        inv = time.monotonic()
        try:
            r = http.delete(f"{self.cluster.url(node)}{BACKENDS}/reg-{key}",
                            headers=self.cluster.headers())  # fmt: skip
        except httpx.ConnectError:
            self.bump("write-refused")
            return
        except httpx.HTTPError:
            self.history.delete(self.index, key, at=inv).unknown()
            self.bump("write-unknown")
            return
        ret = time.monotonic()
        if r.status_code == 200:
            self.history.delete(self.index, key, at=inv).ok(at=ret)
        elif r.status_code == 404:
            self.history.read(self.index, key, at=inv).ok(None, at=ret)
        else:
            assert r.status_code >= 500, r.text
            self.history.delete(self.index, key, at=inv).unknown()
            self.bump("write-unknown")
            return
        self.bump("write-ok")


class Nemesis:
    """One fault at a time, chosen by the seeded RNG: kill -9 and restart, SIGSTOP and
    SIGCONT, cut off (blackhole or refuse) and heal; the leader is a favoured target."""

    def __init__(self, cluster: ControlCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.log: list[str] = []

    def run(self, until: float) -> None:
        assert self.cluster.relays is not None
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(0.2, 0.8))  # a random schedule, not synchronization
            leader = self.cluster.current_leader()
            nodes = list(self.cluster.nodes)
            target = leader if leader is not None and self.rng.random() < 0.6 else None
            target = target or self.rng.choice(nodes)
            fault = self.rng.choice(["kill", "pause", "blackhole", "refuse"])
            hold = self.rng.uniform(0.2, 2.0)
            self.log.append(f"{time.monotonic():.3f} {fault} {target} for {hold:.2f}s")
            if fault == "kill":
                self.cluster.kill(target)
                time.sleep(hold)
                self.cluster.start_node(target)
            elif fault == "pause":
                self.cluster.stop(target)
                time.sleep(hold)
                self.cluster.cont(target)
            else:
                mode = LinkState.BLACKHOLE if fault == "blackhole" else LinkState.REFUSE
                self.cluster.relays.isolate(target, mode)
                time.sleep(hold)
                self.cluster.relays.heal()


def run_linearizability(procs: ProcessGroup, seed: int, seconds: float, clients: int) -> None:
    print(f"linearizability run: seed={seed} seconds={seconds} clients={clients}")
    rng = random.Random(seed)
    history = History()
    counter = iter(range(1000, 60000))
    lock = threading.Lock()

    def next_value() -> int:
        with lock:
            return next(counter)

    with control_cluster(procs, relays=True) as cluster:
        nemesis = Nemesis(cluster, random.Random(rng.random()))
        workers = [
            RegisterClient(i, cluster, history, random.Random(rng.random()), next_value)
            for i in range(clients)
        ]
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=w.run, args=(until,)) for w in workers]
        for t in threads:
            t.start()
        try:
            nemesis.run(until)
        finally:
            for t in threads:
                t.join(30)
            assert cluster.relays is not None
            cluster.relays.heal()
            for node in cluster.nodes:
                if cluster.nodes[node].alive():
                    cluster.cont(node)
                else:
                    cluster.start_node(node)
        counts: dict[str, int] = {}
        for w in workers:
            for k, v in w.counts.items():
                counts[k] = counts.get(k, 0) + v
        print("faults:", *nemesis.log, sep="\n  ")
        print("operations:", dict(sorted(counts.items())))
        saved = procs.workdir / f"history-{seed}.jsonl"
        saved.write_text("".join(json.dumps(dataclasses.asdict(op)) + "\n" for op in history.ops()))
        print("history (one JSON Op per line, to replay the check):", saved)
        result = check(history, max_states=500_000)
        print("checker:", result)
        assert isinstance(result, Ok), (
            f"seed {seed}: {result}"  # Violation.explain() is its str()
        )
        # The run must have exercised the cluster, not just timed out against it.
        assert counts.get("write-ok", 0) >= 20, counts
        assert counts.get("read-ok", 0) >= 20, counts
        cluster.wait_leader(timeout=15)


def seed_from_env() -> int:
    raw = os.environ.get("RINGLEADER_TEST_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


def test_linearizable_under_random_faults(procs: ProcessGroup) -> None:
    run_linearizability(procs, seed_from_env(), seconds=25, clients=4)


@pytest.mark.long
@pytest.mark.timeout(600)
@pytest.mark.parametrize("run", range(12))
def test_linearizable_under_random_faults_long(
    procs: ProcessGroup, run: int, tmp_path: Path
) -> None:
    # More seeds of the default run's size, not longer runs: with ~3,500 unknown-outcome
    # writes (90 s, 6 clients) the WGL search did not finish in 10 minutes.
    base = os.environ.get("RINGLEADER_TEST_SEED")
    seed = int(base) + run if base else random.SystemRandom().randrange(2**32)
    run_linearizability(procs, seed, seconds=25, clients=4)
