"""Ring change under failure: kill -9 one of three memcached and time the fleet's reaction.

    python -m bench.ring_failover [--trials 10] [--keys 300] [--seed 1] [--after 2.0]

Ringleader: 3 control nodes, 2 proxies (`--control`), 3 memcached, detector settings as in
the e2e tests but hysteresis 1 s (only the rejoin between trials waits for it). Each trial
pre-writes `--keys` keys, runs a sequential KV GET load through both proxies, kills one
memcached (chosen by the seeded RNG) and polls both proxies' `/status` every few ms until
both route with a new epoch that excludes it. It reports:

- detect: both proxies' own heartbeat verdict is `down`;
- commit: the MarkDown's event time (leader clock) after the kill;
- converged: both proxies route with the new epoch (the target: p99 <= 1.5 s);
- the GET hit ratio before the kill, during the change and in the `--after` seconds after.

twemproxy (nutcracker) with `auto_eject_hosts: true`, `server_failure_limit: 2`,
`server_retry_timeout: 30000`: two instances over the same 3 memcached, fresh for each
trial. After the kill, keys that belonged to the dead server are probed through each
instance every few ms until they stop erroring: that instance has ejected the server on
its own. Then, in a second phase with traffic on one instance only, a sample of fresh keys
is written through each instance and the server that holds each is compared.

Absolute times depend on the machine (2 shared cores here); the shape is the result.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import require, table
from tests.support.fleet import Fleet, FleetProxy, memcached_meta
from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port

POLL = 0.005
DEADLINE = 15.0


# -- ringleader ----------------------------------------------------------------------------


@dataclass
class Trial:
    victim: str
    detect: float
    commit: float
    converged: float
    skew: float  # between the first and the last proxy switching
    hits: dict[str, tuple[int, int]]  # window -> (hits, total)
    expected: float  # share of the keys not on the victim
    differ: int  # fresh keys the two proxies place differently, after the change


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[rank - 1]


def switched(fleet: Fleet, proxy: FleetProxy, before: int, victim: str) -> bool:
    status = fleet.status(proxy)
    names = [b["name"] for b in status["backends"]]
    return int(status["epoch"]) > before and victim not in names


def ringleader_trial(fleet: Fleet, rng: random.Random, keys: int, after: float) -> Trial:
    pool = "default"
    proxies = fleet.proxies[pool]
    victim = rng.choice(fleet.backends[pool])
    before = fleet.ring_of(proxies[0])[0]
    prefix = f"rf{rng.randrange(1 << 30):x}"
    names = [f"{prefix}-{rng.randrange(1 << 40):x}" for _ in range(keys)]
    owner: dict[str, str] = {}
    for key in names:
        r = fleet.put(proxies[0], key, key.encode())
        if r.status != 204 or r.backend is None:
            sys.exit(f"bench: cannot pre-write {key}: {r}")
        owner[key] = r.backend
    expected = sum(1 for k in names if owner[k] != victim.name) / keys
    with fleet.load(pool, names) as load:
        load.wait_count(100)
        killed_wall, killed = time.time(), time.monotonic()
        victim.process.kill()
        detect: float | None = None
        done: dict[str, float] = {}
        while len(done) < len(proxies):
            now = time.monotonic()
            if now - killed > DEADLINE:
                sys.exit(f"bench: proxies did not switch within {DEADLINE}s")
            if detect is None and all(
                fleet.view(p, victim.name) in ("down", None) for p in proxies
            ):
                detect = time.monotonic()
            for proxy in proxies:
                if proxy.name not in done and switched(fleet, proxy, before, victim.name):
                    done[proxy.name] = time.monotonic()
            time.sleep(POLL)
        converged = max(done.values())
        deadline = converged + after
        while time.monotonic() < deadline:
            time.sleep(0.05)  # the load runs meanwhile
    outcomes = load.snapshot()
    [event] = [e for e in fleet.events(pool) if e["epoch"] > before and e["kind"] == "mark_down"]
    windows = {
        "before": [o for o in outcomes if o.end < killed],
        "during": [o for o in outcomes if o.start >= killed and o.end <= converged],
        "after": [o for o in outcomes if o.start > converged and o.end <= deadline],
    }
    hits = {
        name: (sum(1 for o in os if o.status == 200 and o.body == o.key.encode()), len(os))
        for name, os in windows.items()
    }
    bad = [o for o in outcomes if o.status not in (200, 404)]
    if bad:
        sys.exit(f"bench: {len(bad)} GETs failed during the change, e.g. {bad[0]}")
    differ = ringleader_agreement(fleet, keys)
    # Put the victim back and wait for the agreed MarkUp (flush, hysteresis).
    fleet.restart_backend(victim)
    fleet.wait_converged(pool, lambda m: victim.name in m, "rejoin", 30)
    return Trial(
        victim=victim.name,
        detect=(detect or converged) - killed,
        commit=float(event["time"]) - killed_wall,
        converged=converged - killed,
        skew=converged - min(done.values()),
        hits=hits,
        expected=expected,
        differ=differ,
    )


def run_ringleader(trials: int, keys: int, after: float, rng: random.Random) -> list[Trial]:
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="bench-rf-")), hysteresis=1.0,
                  pools={"default": "memcached"})  # fmt: skip
    try:
        fleet.start()
        results = []
        for i in range(trials):
            trial = ringleader_trial(fleet, rng, keys, after)
            print(f"  ringleader trial {i + 1}: kill {trial.victim}: converged in "
                  f"{trial.converged * 1000:.0f} ms", file=sys.stderr)  # fmt: skip
            results.append(trial)
        violations = fleet.epochs.violations()
        if violations:
            sys.exit(f"bench: X-Ringleader-Epoch went down: {violations[:3]}")
        return results
    finally:
        fleet.close()


# -- nutcracker ------------------------------------------------------------------------------


class MemcacheConn:
    """A blocking memcached text-protocol connection (to nutcracker or a server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((LOOPBACK, self.port), timeout=2)
        return self.sock

    def call(self, payload: bytes) -> bytes:
        """The reply's first line (values are drained), or b'' if the connection broke."""
        try:
            sock = self._connect()
            sock.sendall(payload)
            data = b""
            while not _complete(data):
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                data += chunk
            return data.split(b"\r\n", 1)[0]
        except OSError:
            self.close()
            return b""

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def _complete(data: bytes) -> bool:
    if not data.endswith(b"\r\n"):
        return False
    first = data.split(b"\r\n", 1)[0]
    return not first.startswith(b"VALUE") or data.endswith(b"END\r\n")


def failed(reply: bytes) -> bool:
    """nutcracker answers a request it could not forward with SERVER_ERROR."""
    return reply == b"" or reply.startswith((b"SERVER_ERROR", b"ERROR", b"CLIENT_ERROR"))


def nutcracker(procs: ProcessGroup, servers: list[ServerProcess], name: str) -> ServerProcess:
    port = free_port()
    conf = procs.workdir / f"{name}.yml"
    lines = ["pool:", f"  listen: {LOOPBACK}:{port}", "  hash: fnv1a_64",
             "  distribution: ketama", "  auto_eject_hosts: true",
             "  server_failure_limit: 2", "  server_retry_timeout: 30000", "  timeout: 500",
             "  servers:",
             *(f"   - {LOOPBACK}:{s.port}:1 mc{i + 1}" for i, s in enumerate(servers))]  # fmt: skip
    conf.write_text("\n".join(lines) + "\n")
    argv = [require("nutcracker"), "-c", str(conf), "-s", str(free_port()),
            "-o", str(procs.workdir / f"{name}.out")]  # fmt: skip
    return procs.spawn(name, argv, port).wait_port()


def holder(servers: list[ServerProcess], key: str) -> str:
    """Which live server holds `key`, read from the servers themselves."""
    found = []
    for i, server in enumerate(servers):
        if server.alive() and memcached_meta(server.port, key)[0] is not None:
            found.append(f"mc{i + 1}")
    return found[0] if len(found) == 1 else f"{len(found)} servers"


@dataclass
class NutTrial:
    victim: str
    eject: list[float]  # per instance: kill -> its last error on the dead server's keys
    differ: int  # sample keys routed differently while only one instance had ejected
    differ_dead: int  # of those, written to the dead server (an error) by the other one
    sample: int
    differ_after: int  # once both had ejected


def nutcracker_trial(rng: random.Random, keys: int) -> NutTrial:
    procs = ProcessGroup(Path(tempfile.mkdtemp(prefix="bench-nc-")))
    try:
        servers = [procs.memcached() for _ in range(3)]
        a, b = nutcracker(procs, servers, "nc-a"), nutcracker(procs, servers, "nc-b")
        conns = [MemcacheConn(a.port), MemcacheConn(b.port)]
        index = rng.randrange(3)
        victim, victim_name = servers[index], f"mc{index + 1}"
        prefix = f"nc{rng.randrange(1 << 30):x}"
        probes = []
        for i in range(keys):
            key = f"{prefix}-{rng.randrange(1 << 40):x}-{i}"
            assert conns[0].call(b"set %s 0 0 1\r\nx\r\n" % key.encode()) == b"STORED"
            if holder(servers, key) == victim_name:
                probes.append(key)
        # Phase 1: traffic on both instances; when does each stop erroring?
        victim.kill()
        killed = time.monotonic()
        last_error = [killed, killed]
        ok_streak = [0, 0]
        i = 0
        while min(ok_streak) < 50:
            if time.monotonic() - killed > DEADLINE:
                sys.exit("bench: nutcracker did not eject within the deadline")
            probe = probes[i % len(probes)].encode()
            i += 1
            for n, conn in enumerate(conns):
                if failed(conn.call(b"get %s\r\n" % probe)):
                    last_error[n] = time.monotonic()
                    ok_streak[n] = 0
                else:
                    ok_streak[n] += 1
            time.sleep(POLL)
        eject = [t - killed for t in last_error]
        differ_after = compare(conns, servers, rng, keys)[0]
        # Phase 2: fresh instances, the same failure, traffic on instance A only.
        for conn in conns:
            conn.close()
        servers[index] = procs.memcached(port=victim.port)
        a2, b2 = nutcracker(procs, servers, "nc-a2"), nutcracker(procs, servers, "nc-b2")
        conns = [MemcacheConn(a2.port), MemcacheConn(b2.port)]
        for conn in conns:  # both have connected to every server once
            for key in probes[:20]:
                conn.call(b"get %s\r\n" % key.encode())
        servers[index].kill()
        streak, killed = 0, time.monotonic()
        while streak < 20:
            if time.monotonic() - killed > DEADLINE:
                sys.exit("bench: nutcracker A did not eject within the deadline")
            streak = 0 if failed(conns[0].call(b"get %s\r\n" % probes[0].encode())) else streak + 1
        differ, dead = compare(conns, servers, rng, keys)
        for conn in conns:
            conn.close()
        return NutTrial(victim_name, eject, differ, dead, keys, differ_after)
    finally:
        procs.cleanup()


def compare(conns: list[MemcacheConn], servers: list[ServerProcess], rng: random.Random,
            count: int) -> tuple[int, int]:  # fmt: skip
    """Writes `count` fresh keys through instance A, then B (the B copy once A's is
    deleted), and counts the keys that land on different servers, and of those the ones B
    could not write at all (it still routes them to the dead server)."""
    differ = dead = 0
    prefix = f"cmp{rng.randrange(1 << 30):x}"
    for i in range(count):
        key = f"{prefix}-{i}".encode()
        where = []
        for conn in conns:
            reply = conn.call(b"set %s 0 0 1\r\nx\r\n" % key)
            where.append(holder(servers, key.decode()) if reply == b"STORED" else "error")
            conn.call(b"delete %s\r\n" % key)
        if where[0] != where[1]:
            differ += 1
            dead += "error" in where
    return differ, dead


def ringleader_agreement(fleet: Fleet, count: int) -> int:
    """Fresh keys whose owner differs between the two proxies (X-Ringleader-Backend)."""
    p1, p2 = fleet.proxies["default"]
    differ = 0
    with httpx.Client(timeout=2) as client:
        for i in range(count):
            key = f"agree-{i}-{i * 7919}"
            owners = [client.put(f"{p.url}/v1/kv/{key}", content=b"x").headers.get(
                "x-ringleader-backend") for p in (p1, p2)]  # fmt: skip
            differ += owners[0] != owners[1]
    return differ


# -- report ----------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return (f"{statistics.median(values) * 1000:.0f} / {percentile(values, 99) * 1000:.0f} / "
            f"{max(values) * 1000:.0f}")  # fmt: skip


def ratio(trials: list[Trial], window: str) -> str:
    hits = sum(t.hits[window][0] for t in trials)
    total = sum(t.hits[window][1] for t in trials)
    return f"{hits / total:.3f} ({hits}/{total})" if total else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--after", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--skip-nutcracker", action="store_true")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    command = f"python -m bench.ring_failover --trials {args.trials} --keys {args.keys} " \
              f"--after {args.after} --seed {seed}"  # fmt: skip
    print(f"seed {seed}: {command}", file=sys.stderr)
    rng = random.Random(seed)
    for binary in ("memcached", "nutcracker"):
        require(binary)

    trials = run_ringleader(args.trials, args.keys, args.after, rng)
    conv = [t.converged for t in trials]
    print(f"\n`{command}`\n")
    print(f"Ringleader, {len(trials)} trials (median / p99 / max, ms):\n")
    print(table([
        ("both proxies' heartbeat verdict down", ms([t.detect for t in trials])),
        ("MarkDown committed (event time)", ms([t.commit for t in trials])),
        ("**every proxy routes on the new epoch**", ms(conv)),
        ("first to last proxy switching", ms([t.skew for t in trials])),
    ], ("kill -9 -> ", "median / p99 / max (ms)")))  # fmt: skip
    expected = statistics.mean(t.expected for t in trials)
    print(f"\nTarget p99 <= 1500 ms: {'met' if percentile(conv, 99) <= 1.5 else 'NOT met'}.\n")
    print(table([
        ("before the kill", ratio(trials, "before")),
        ("during the change (kill -> converged)", ratio(trials, "during")),
        (f"{args.after:g} s after", ratio(trials, "after")),
        ("share of keys not on the killed server", f"{expected:.3f}"),
    ], ("GET window", "hits / total")))  # fmt: skip
    placed = sum(t.differ for t in trials)
    print(f"\nFresh keys the two proxies placed on different servers after the change: "
          f"{placed} / {args.keys * len(trials)}.")  # fmt: skip

    if args.skip_nutcracker:
        return
    nut = []
    for i in range(args.trials):
        trial = nutcracker_trial(rng, args.keys)
        print(f"  nutcracker trial {i + 1}: kill {trial.victim}: ejected after "
              f"{[round(e * 1000) for e in trial.eject]} ms", file=sys.stderr)  # fmt: skip
        nut.append(trial)
    ejects = [e for t in nut for e in t.eject]
    gaps = [abs(t.eject[0] - t.eject[1]) for t in nut]
    sample = sum(t.sample for t in nut)
    print(f"\nnutcracker x2 (auto_eject_hosts, server_failure_limit 2, server_retry_timeout "
          f"30 s), {len(nut)} trials:\n")  # fmt: skip
    print(table([
        ("each instance stops routing to the dead server (ms, median / p99 / max)", ms(ejects)),
        ("gap between the two instances (ms, median / p99 / max)", ms(gaps)),
        ("fresh keys placed differently, both instances probed (after both ejected)",
         f"{sum(t.differ_after for t in nut)} / {sample}"),
        ("fresh keys placed differently, traffic on one instance only",
         f"{sum(t.differ for t in nut)} / {sample} "
         f"({sum(t.differ_dead for t in nut)} sent to the dead server)"),
    ], ("nutcracker", "result")))  # fmt: skip


if __name__ == "__main__":
    main()
