"""The agreed ring under failure, end to end, with real processes.

One fleet for the module (`tests/support/fleet.py`): 3 `ringleader control` nodes, pool
`default` (3 memcached) and pool `redis` (3 redis-server), two `ringleader proxy
--control` per pool. Each test breaks something and the `restored` fixture puts the fleet
back (every node and cache server running, every backend active, up and in the ring,
every proxy agreeing), so tests do not depend on each other's order; the last one stops
the whole control plane and restarts it.

Throughout the module every KV response's `X-Ringleader-Epoch` is logged per proxy, and
after each test the log is checked: a proxy's epoch never goes down (docs/invariants.md,
invariant 2).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from tests.support.fleet import (
    FAILOVER_TTL,
    REPORT_INTERVAL,
    Fleet,
    FleetProxy,
    SelectiveRelay,
    holds,
    memcached_stat,
    plant,
    stored_ttl,
)
from tests.support.servers import port_open, wait_until

DECISION = 20.0  # deadline for a failure to become an agreed ring change
REJOIN = 30.0  # deadline for hysteresis + flush + MarkUp


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("e2e-fleet"))
    try:
        f.start()
        yield f
    finally:
        f.close()


@pytest.fixture(autouse=True)
def restored(fleet: Fleet) -> Iterator[None]:
    yield
    restore(fleet)
    violations = fleet.epochs.violations()
    assert not violations, "X-Ringleader-Epoch went down:\n" + "\n".join(violations[:10])


def restore(fleet: Fleet) -> None:
    control = fleet.control
    if not all(n.alive() for n in control.nodes.values()):
        if not any(n.alive() for n in control.nodes.values()):
            control.start()
        for node_id, node in control.nodes.items():
            if not node.alive():
                control.start_node(node_id)
    control.wait_leader(20)
    for pool, backends in fleet.backends.items():
        for backend in backends:
            if backend.process.alive():
                backend.process.cont()  # harmless unless a test left it stopped
            else:
                fleet.restart_backend(backend)
        for name, b in fleet.control_backends(pool).items():
            if b["admin"] == "draining":
                fleet.cli("backend", "activate", name, "--pool", pool)
        names = sorted(b.name for b in backends)

        def healthy(pool: str = pool, names: list[str] = names) -> bool:
            listed = fleet.control_backends(pool)
            return all(listed[n]["in_ring"] for n in names)

        wait_until(healthy, REJOIN, f"every backend of {pool} back in the ring")

        def full(members: list[str], names: list[str] = names) -> bool:
            return sorted(members) == names

        fleet.wait_converged(pool, full, "the full ring")
    for proxy in (p for ps in fleet.proxies.values() for p in ps):
        assert proxy.process.alive(), proxy.process.log_tail()


# -- helpers ---------------------------------------------------------------------------------


def epoch_of(fleet: Fleet, pool: str) -> int:
    return fleet.ring_of(fleet.proxies[pool][0])[0]


def events_since(fleet: Fleet, pool: str, epoch: int, kind: str | None = None,
                 backend: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    return [
        e for e in fleet.events(pool)
        if e["epoch"] > epoch and kind in (None, e["kind"]) and backend in (None, e["backend"])
    ]  # fmt: skip


def wait_header_epoch(fleet: Fleet, proxy: FleetProxy, epoch: int, key: str) -> None:
    """Until the proxy's KV answers carry `epoch` (its workers installed the ring)."""
    wait_until(lambda: fleet.get(proxy, key).epoch == epoch, 5, f"{proxy.name} at {epoch}")


def assert_evidence(event: dict[str, Any], proxies: list[FleetProxy], state: str) -> None:
    """The event names every proxy that voted and what it saw."""
    evidence = event["evidence"]
    assert set(evidence) == {p.identity for p in proxies}, evidence
    for seen in evidence.values():
        assert seen["state"] == state
        if state == "down":
            assert seen["error"], evidence
        assert isinstance(seen["since"], float)


def reads(fleet: Fleet, proxy: FleetProxy, key: str, value: bytes) -> bool:
    return fleet.get(proxy, key).body == value


def sees(fleet: Fleet, proxy: FleetProxy, backend: str, *states: str | None) -> bool:
    """Whether the proxy's heartbeat verdict on `backend` is one of `states` (None: the
    backend is no longer in its ring)."""
    return fleet.view(proxy, backend) in states


def detector_count(fleet: Fleet, node: int, pool: str, decision: str) -> float:
    return fleet.control.metric(
        node, "ringleader_detector_decisions_total", {"pool": pool, "decision": decision}
    )


# -- failure and rejoin ----------------------------------------------------------------------


def test_kill9_under_load_both_proxies_agree_and_no_get_fails(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    owned = fleet.keys_owned(pool, "load", 15)
    victim = fleet.backend(pool, "mc1")
    keys = sorted(k for ks in owned.values() for k in ks)
    before = epoch_of(fleet, pool)
    redis_before = epoch_of(fleet, "redis")
    with fleet.load(pool, keys) as load:
        load.wait_count(200)
        victim.process.kill()
        killed_at = time.monotonic()
        epoch = fleet.wait_converged(pool, lambda m: "mc1" not in m, "mc1 ejected",
                                     DECISION, after=before)  # fmt: skip
        for proxy in (p1, p2):
            wait_header_epoch(fleet, proxy, epoch, keys[0])
        load.wait_count(len(load.snapshot()) + 200)
    outcomes = load.snapshot()
    assert fleet.control_ring(pool)["epoch"] == epoch
    assert [b["name"] for b in fleet.control_ring(pool)["backends"]] == ["mc2", "mc3"]
    assert epoch_of(fleet, "redis") == redis_before, "the other pool's ring changed"

    failed = [o for o in outcomes if o.status not in (200, 404)]
    assert not failed, f"{len(failed)} GETs failed, first: {failed[:3]}"
    during = [o for o in outcomes if o.end > killed_at and o.epoch == before]
    assert during, "no GET was answered between the kill and the new ring"
    for o in outcomes:
        if o.key in owned["mc1"]:
            # Before the agreed change the dead owner is a miss, never a reroute; after
            # it, the key's new owner does not have it.
            if o.epoch == before:
                assert o.backend == "mc1", o
            if o.epoch == epoch:
                assert o.backend in ("mc2", "mc3"), o
            if o.start > killed_at:
                assert o.status == 404, o
        else:
            assert (o.status, o.body) == (200, o.key.encode()), o
    assert {o.epoch for o in outcomes if o.start > killed_at} <= {before, epoch}

    [event] = events_since(fleet, pool, before)
    assert (event["kind"], event["backend"], event["epoch"]) == ("mark_down", "mc1", epoch)
    assert event["who"] == "detector"
    assert "2 of 2" in event["why"]
    assert_evidence(event, [p1, p2], "down")


def test_restarted_backend_rejoins_after_hysteresis_and_flushed(fleet: Fleet) -> None:
    pool = "default"
    victim = fleet.backend(pool, "mc2")
    before = epoch_of(fleet, pool)
    victim.process.kill()
    down = fleet.wait_converged(pool, lambda m: "mc2" not in m, "mc2 ejected", DECISION,
                                after=before)  # fmt: skip
    started = time.time()
    fleet.restart_backend(victim)
    # Data the rejoining server holds from before it rejoins (like a restart from a
    # persisted cache would): planted while the ring still excludes it.
    plant(victim, "rejoin-sentinel", b"from-before")
    assert "mc2" not in [b["name"] for b in fleet.control_ring(pool)["backends"]]
    assert holds(victim, "rejoin-sentinel")
    assert memcached_stat(victim.port, "cmd_flush") == 0

    up = fleet.wait_converged(pool, lambda m: "mc2" in m, "mc2 back", REJOIN, after=down)
    [event] = events_since(fleet, pool, down)
    assert (event["kind"], event["backend"], event["epoch"]) == ("mark_up", "mc2", up)
    waited = event["time"] - started
    assert fleet.hysteresis <= waited <= fleet.hysteresis + fleet.report_ttl + 5, waited
    assert_evidence(event, fleet.proxies[pool], "up")
    assert not holds(victim, "rejoin-sentinel"), "rejoined without a flush"
    assert memcached_stat(victim.port, "cmd_flush") == 1


def test_stale_write_is_never_read_after_rejoin(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    key = fleet.keys_owned(pool, "stale", 1)["mc3"][0]
    owner = fleet.backend(pool, "mc3")
    before = epoch_of(fleet, pool)
    # 1. k = v1
    assert fleet.put(p1, key, b"v1").backend == "mc3"
    with fleet.load(pool, [key]) as load:
        # 2. Freeze k's owner (it keeps v1) until the fleet marks it down.
        owner.process.stop()
        down = fleet.wait_converged(pool, lambda m: "mc3" not in m, "mc3 ejected", DECISION,
                                    after=before)  # fmt: skip
        for proxy in (p1, p2):
            wait_header_epoch(fleet, proxy, down, key)
        # 3. k = v2, which lands on another backend with a capped TTL.
        r = fleet.put(p2, key, b"v2")
        v2_written = time.monotonic()
        assert r.status == 204, r
        assert r.backend not in (None, "mc3"), r
        assert r.backend is not None
        ttl = stored_ttl(fleet.backend(pool, r.backend), key)
        assert ttl is not None
        assert 0 < ttl <= FAILOVER_TTL
        for proxy in (p1, p2):
            wait_until(partial(reads, fleet, proxy, key, b"v2"), 5, f"v2 via {proxy.name}")
        # 4. Thaw it; the fleet flushes it and marks it up.
        owner.process.cont()
        up = fleet.wait_converged(pool, lambda m: "mc3" in m, "mc3 back", REJOIN, after=down)
        for proxy in (p1, p2):
            wait_header_epoch(fleet, proxy, up, key)
        load.wait_count(len(load.snapshot()) + 100)
    # 5. No GET after v2 was written returned v1, and now k's owner answers a miss.
    later = [o for o in load.snapshot() if o.start > v2_written]
    assert later
    assert not [o for o in later if o.body == b"v1"], "a GET returned the stale v1"
    assert {o.status for o in later} <= {200, 404}
    for proxy in (p1, p2):
        r = fleet.get(proxy, key)
        assert (r.status, r.backend, r.epoch) == (404, "mc3", up), r
    assert memcached_stat(owner.port, "cmd_flush") >= 1


# -- what must not eject -------------------------------------------------------------------


def test_backend_only_one_proxy_cannot_reach_is_not_ejected(fleet: Fleet) -> None:
    """Proxy 2 loses backend mc4; proxy 1 still reaches it.

    mc4 is registered through a `SelectiveRelay` (tests/support/fleet.py): a TCP relay in
    front of the memcached that resets every connection whose client socket belongs to
    proxy 2's process tree (found through /proc/net/tcp and /proc/PID/fd), and relays
    everyone else's. Proxy 2's heartbeats and traffic to mc4 fail for real; proxy 1's do
    not. One of two proxies is not a quorum, so the ring must not change.
    """
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    server = fleet.procs.memcached()
    relay = SelectiveRelay(server.port)
    try:
        fleet.add_backend(pool, "memcached", "mc4", via_port=relay.port, process=server)
        epoch = fleet.wait_converged(pool, lambda m: "mc4" in m, "mc4 added")
        for proxy in (p1, p2):
            wait_until(partial(sees, fleet, proxy, "mc4", "up"), 10, "mc4 up")
        key = next(k for k in (f"split-{i}-{i * 7919 % 1000}" for i in range(1000))
                   if fleet.put(p1, k, k.encode()).backend == "mc4")  # fmt: skip

        relay.block(p2.process.pid)
        wait_until(lambda: fleet.view(p2, "mc4") == "down", 10, "proxy 2 to see mc4 down")
        down_seen = time.monotonic()
        # Observe for three report rounds: proxy 2 reports its verdict at once and then
        # every REPORT_INTERVAL, and the detector decides every 0.1 s.
        while time.monotonic() < down_seen + 3 * REPORT_INTERVAL:
            for proxy in (p1, p2):
                ring_epoch, members = fleet.ring_of(proxy)
                assert (ring_epoch, "mc4" in members) == (epoch, True)
            assert (fleet.view(p1, "mc4"), fleet.view(p2, "mc4")) == ("up", "down")
            time.sleep(0.05)  # pacing of the observation, not a wait for anything
        assert fleet.control_backends(pool)["mc4"]["health"] == "up"
        assert not events_since(fleet, pool, epoch), "the ring changed"
        assert relay.refused > 0
        # No solo rehashing: proxy 2 answers a miss for mc4's key, proxy 1 the value.
        r2, r1 = fleet.get(p2, key), fleet.get(p1, key)
        assert (r2.status, r2.backend, r2.headers.get("x-ringleader-miss")) == (
            404, "mc4", "backend-unavailable")  # fmt: skip
        assert (r1.status, r1.body) == (200, key.encode())
        assert fleet.put(p2, key, b"x").status == 503
    finally:
        relay.unblock()
        fleet.backends[pool] = [b for b in fleet.backends[pool] if b.name != "mc4"]
        fleet.cli("backend", "remove", "mc4", "--pool", pool)
        relay.close()
        server.kill()


def test_killing_two_of_three_ejects_no_more_than_the_cap(fleet: Fleet) -> None:
    pool = "redis"
    before = epoch_of(fleet, pool)
    leader = fleet.control.wait_leader()
    held_before = detector_count(fleet, leader, pool, "held_by_cap")
    victims = [fleet.backend(pool, "rd1"), fleet.backend(pool, "rd2")]
    for victim in victims:
        victim.process.kill()
    epoch = fleet.wait_converged(pool, lambda m: len(m) == 2, "one backend ejected", DECISION,
                                 after=before)  # fmt: skip
    wait_until(lambda: detector_count(fleet, leader, pool, "held_by_cap") > held_before, 10,
               "the detector to hold the second ejection")  # fmt: skip
    # The quorum saw both down; the cap (floor(3 x 0.5) = 1) held one back. Watch it stay
    # held through two more report rounds.
    held_seen = time.monotonic()
    while time.monotonic() < held_seen + 2 * REPORT_INTERVAL:
        assert {fleet.ring_of(p)[0] for p in fleet.proxies[pool]} == {epoch}
        time.sleep(0.05)  # pacing of the observation, not a wait for anything
    members = [b["name"] for b in fleet.control_ring(pool)["backends"]]
    assert len(members) == 2, members
    assert "rd3" in members, members
    downs = events_since(fleet, pool, before, "mark_down")
    assert len(downs) == 1, downs
    assert downs[0]["backend"] in ("rd1", "rd2"), downs
    health = {n: b["health"] for n, b in fleet.control_backends(pool).items()}
    assert sorted(health.values()) == ["down", "up", "up"], health


def test_leader_killed_mid_failure_decision_after_reelection(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    control = fleet.control
    before = epoch_of(fleet, pool)
    old = control.wait_leader()
    others = control.followers(old)
    counts = {n: detector_count(fleet, n, pool, "mark_down") for n in others}
    # Freeze the leader, so nothing about the failure can be decided by it, then fail a
    # backend and let both proxies see it: the failure is under way, undecided.
    control.stop(old)
    victim = fleet.backend(pool, "mc2")
    victim.process.kill()
    for proxy in (p1, p2):
        wait_until(partial(sees, fleet, proxy, "mc2", "down", None), 10,
                   f"{proxy.name} to see mc2 fail")  # fmt: skip
    control.kill(old)
    new = control.wait_leader(20, among=others)
    epoch = fleet.wait_converged(pool, lambda m: "mc2" not in m, "mc2 ejected", 30,
                                 after=before)  # fmt: skip
    assert new != old
    [event] = events_since(fleet, pool, before)
    assert (event["kind"], event["backend"], event["epoch"]) == ("mark_down", "mc2", epoch)
    assert_evidence(event, [p1, p2], "down")
    decided = [n for n in others if detector_count(fleet, n, pool, "mark_down") > counts[n]]
    assert decided == [new], (decided, new)


# -- operator views and actions --------------------------------------------------------------


def test_events_list_each_ring_change_with_time_cause_and_evidence(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    key = fleet.keys_owned(pool, "events", 1)["mc3"][0]
    before = epoch_of(fleet, pool)
    fleet.backend(pool, "mc3").process.kill()
    down = fleet.wait_converged(pool, lambda m: "mc3" not in m, "mc3 out", DECISION,
                                after=before)  # fmt: skip
    for proxy in (p1, p2):
        wait_header_epoch(fleet, proxy, down, key)
    fleet.restart_backend(fleet.backend(pool, "mc3"))
    up = fleet.wait_converged(pool, lambda m: "mc3" in m, "mc3 back", REJOIN, after=down)
    for proxy in (p1, p2):
        wait_header_epoch(fleet, proxy, up, key)

    events = fleet.events(pool)
    # Every epoch any proxy of the pool has answered with is explained by an event.
    observed = fleet.epochs.seen_epochs([p.name for p in fleet.proxies[pool]]) - {0}
    assert observed >= {down, up}
    explained = {e["epoch"] for e in events}
    assert observed <= explained, observed - explained
    now = time.time()
    for e in events:
        assert 0 < e["time"] <= now
        assert e["pool"] == pool
        assert e["who"]
        assert e["kind"]
    assert [e["epoch"] for e in events] == sorted(e["epoch"] for e in events)

    table = fleet.cli("events", "--pool", pool).stdout.splitlines()
    assert table[0].split() == ["TIME", "EPOCH", "CHANGE", "BACKEND", "WHO", "WHY", "EVIDENCE"]
    cells = [re.split(r" {2,}", row) for row in table[1:]]
    for kind, epoch in (("mark_down", down), ("mark_up", up)):
        [row] = [c for c in cells if c[1:5] == [str(epoch), kind, "mc3", "detector"]]
        when, why, evidence = row[0], row[5], json.loads(row[6])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", when), row
        assert set(evidence) == {p1.identity, p2.identity}, row
        if kind == "mark_down":
            assert why == "2 of 2 reporting proxies see it down"
            assert all("Connection refused" in v["error"] for v in evidence.values()), row
        else:
            assert why.startswith("2 of 2 reporting proxies saw it up for 2s"), row


def test_rollback_restores_an_earlier_membership_as_a_new_epoch(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    key = fleet.keys_owned(pool, "rollback", 1)["mc2"][0]
    ring = fleet.control_ring(pool)
    full, members = ring["epoch"], [b["name"] for b in ring["backends"]]
    assert sorted(members) == ["mc1", "mc2", "mc3"]
    fleet.cli("backend", "drain", "mc2", "--pool", pool, "--why", "rollback test")
    without = [m for m in members if m != "mc2"]
    drained = fleet.wait_converged(pool, lambda m: m == without, "mc2 drained",
                                   after=full)  # fmt: skip
    assert fleet.get(p1, key).backend != "mc2"

    result = fleet.cli_json("rollback", str(full), "--pool", pool, "--why", "undo the drain")
    restored = result["epoch"]
    assert restored > drained
    assert fleet.wait_converged(pool, lambda m: m == members, "the full ring again",
                                after=drained) == restored  # fmt: skip
    for proxy in (p1, p2):
        wait_header_epoch(fleet, proxy, restored, key)
        r = fleet.get(proxy, key)
        assert (r.status, r.backend, r.body) == (200, "mc2", key.encode()), r
    [event] = events_since(fleet, pool, drained)
    assert (event["kind"], event["epoch"], event["evidence"]) == (
        "rollback", restored, {"epoch": full})  # fmt: skip
    assert event["why"] == "undo the drain"
    assert fleet.control_backends(pool)["mc2"]["admin"] == "active"

    # Rolling back to the drained membership works the same way, forwards.
    again = fleet.cli_json("rollback", str(drained), "--pool", pool)["epoch"]
    fleet.wait_converged(pool, lambda m: m == without, "the drained ring",
                         after=restored)  # fmt: skip
    assert again > restored
    bad = fleet.cli("rollback", "1", "--pool", pool, check=False)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "known epochs" in bad.stderr


def test_drain_takes_a_backend_out_without_marking_it_failed(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    key = fleet.keys_owned(pool, "drain", 1)["mc1"][0]
    before = epoch_of(fleet, pool)
    failovers = fleet.metric(p1, "ringleader_proxy_failover_writes_total")
    out = fleet.cli("backend", "drain", "mc1", "--pool", pool, "--why", "maintenance").stdout
    assert out.startswith("drain mc1: pool default at epoch")
    epoch = fleet.wait_converged(pool, lambda m: sorted(m) == ["mc2", "mc3"], "mc1 drained",
                                 after=before)  # fmt: skip
    mc1 = fleet.control_backends(pool)["mc1"]
    assert (mc1["admin"], mc1["health"], mc1["in_ring"]) == ("draining", "up", False)
    [event] = events_since(fleet, pool, before)
    assert (event["kind"], event["backend"], event["epoch"]) == ("drain", "mc1", epoch)
    assert event["who"].startswith("cli:")
    assert event["why"] == "maintenance"
    # A drained backend is not a failure: writes of its keys are ordinary writes, no cap.
    wait_header_epoch(fleet, p1, epoch, key)
    sets = "ringleader_backend_request_duration_seconds_count"
    counted = {n: fleet.metric(p1, sets, {"backend": n, "op": "set"}) for n in ("mc2", "mc3")}
    r = fleet.put(p1, key, b"moved", ttl=3600)
    assert r.status == 204
    assert r.backend in ("mc2", "mc3")
    assert r.backend is not None
    ttl = stored_ttl(fleet.backend(pool, r.backend), key)
    assert ttl is not None
    assert ttl > 3500
    # The worker reports its counters every second: wait for a report past the write.
    labels = {"backend": r.backend, "op": "set"}
    wait_until(lambda: fleet.metric(p1, sets, labels) > counted[labels["backend"]], 5,
               "the write to show in the metrics")  # fmt: skip
    assert fleet.metric(p1, "ringleader_proxy_failover_writes_total") == failovers

    fleet.cli("backend", "activate", "mc1", "--pool", pool)
    fleet.wait_converged(pool, lambda m: "mc1" in m, "mc1 back", after=epoch)
    assert fleet.view(p2, "mc1") == "up"


@pytest.mark.parametrize("pool", ["default", "redis"])
def test_failover_write_ttl_is_capped(fleet: Fleet, pool: str) -> None:
    """A PUT whose key's owner is down lands elsewhere with TTL <= --failover-ttl, read
    back from the cache server itself (memcached `mg KEY t`, redis TTL)."""
    p1 = fleet.proxies[pool][0]
    victim, survivor = fleet.backends[pool][0], fleet.backends[pool][1]
    owned = fleet.keys_owned(pool, f"ttl-{pool}", 2)
    before = epoch_of(fleet, pool)
    victim.process.kill()
    epoch = fleet.wait_converged(pool, lambda m: victim.name not in m, "owner ejected",
                                 DECISION, after=before)  # fmt: skip
    wait_header_epoch(fleet, p1, epoch, owned[survivor.name][0])
    failovers = fleet.metric(p1, "ringleader_proxy_failover_writes_total")

    for key, ttl in ((owned[victim.name][0], 3600), (owned[victim.name][1], None)):
        r = fleet.put(p1, key, b"failover", ttl=ttl)
        assert r.status == 204, r
        assert r.backend not in (None, victim.name), r
        assert r.backend is not None
        stored = stored_ttl(fleet.backend(pool, r.backend), key)
        assert stored is not None, key
        assert 0 < stored <= FAILOVER_TTL, (key, ttl, stored)
    # A key whose owner is up keeps the TTL it was given.
    normal = owned[survivor.name][0]
    r = fleet.put(p1, normal, b"normal", ttl=3600)
    assert (r.status, r.backend) == (204, survivor.name)
    normal_ttl = stored_ttl(survivor, normal)
    assert normal_ttl is not None
    assert normal_ttl > 3500
    wait_until(lambda: fleet.metric(p1, "ringleader_proxy_failover_writes_total")
               == failovers + 2, 5, "two failover writes counted")  # fmt: skip


# -- static stability ------------------------------------------------------------------------


def test_proxies_keep_serving_when_the_whole_control_plane_is_down(fleet: Fleet) -> None:
    pool = "default"
    p1, p2 = fleet.proxies[pool]
    epoch = epoch_of(fleet, pool)
    for node_id in fleet.control.nodes:
        fleet.control.kill(node_id)

    def cut_off(proxy: FleetProxy) -> bool:
        return (fleet.status(proxy)["control_error"] is not None
                and fleet.metric(proxy, "ringleader_proxy_control_up") == 0)  # fmt: skip

    for proxy in (p1, p2):
        wait_until(partial(cut_off, proxy), 10, f"{proxy.name} to lose control")
    for i, proxy in enumerate((p1, p2)):
        key = f"static-{i}"
        assert fleet.put(proxy, key, b"still here").status == 204
        r = fleet.get(proxy, key)
        assert (r.status, r.body, r.epoch) == (200, b"still here", epoch)
        ring_epoch, members = fleet.ring_of(proxy)
        assert (ring_epoch, sorted(members)) == (epoch, ["mc1", "mc2", "mc3"])
    assert "control plane unavailable" in fleet.status(p1)["control_error"]

    late = fleet.start_proxy(pool, "late", wait=False)
    try:
        wait_until(lambda: port_open(int(late.admin_url.rsplit(":", 1)[1])), 15, "late admin")

        def not_ready() -> dict[str, Any] | None:
            r = httpx.get(late.admin_url + "/readyz", timeout=2)
            assert r.status_code == 503, r.text
            body = dict(r.json())
            return body if "unavailable" in body["reason"] else None

        wait_until(lambda: not_ready() is not None, 10, "a reason on /readyz")
        body = not_ready()
        assert body is not None
        assert body["status"] == "not ready"
        reason = body["reason"]
        assert reason.startswith("no ring from the control plane yet: control plane unavailable")
        assert "\n" not in reason
        assert "Traceback" not in reason
        assert "Traceback" not in late.process.log_tail(200)

        fleet.control.start()
        fleet.wait_proxy_ready(late, timeout=30)
        assert fleet.ring_of(late) == fleet.ring_of(p1)
        assert fleet.ring_of(late)[0] == epoch
        r = fleet.get(late, "static-0")
        assert (r.status, r.body, r.epoch) == (200, b"still here", epoch)
        assert fleet.metric(late, "ringleader_proxy_control_up") == 1
        assert "Traceback" not in late.process.log_tail(500)
        assert late.process.terminate() == 0
    finally:
        late.process.kill()


def test_proxies_report_the_control_plane_back_promptly(fleet: Fleet) -> None:
    """Once the control plane is back, /status and ringleader_proxy_control_up say so
    within the watch's retry backoff (at most 5 s, jittered), not a long-poll later."""
    proxies = fleet.proxies["default"]
    for node_id in fleet.control.nodes:
        fleet.control.kill(node_id)

    def control_up(proxy: FleetProxy) -> bool:
        return (fleet.status(proxy)["control_error"] is None
                and fleet.metric(proxy, "ringleader_proxy_control_up") == 1)  # fmt: skip

    def control_down(proxy: FleetProxy) -> bool:
        return not control_up(proxy)

    for proxy in proxies:
        wait_until(partial(control_down, proxy), 10, f"{proxy.name} cut off")
    fleet.control.start()
    back = time.monotonic()
    for proxy in proxies:
        wait_until(partial(control_up, proxy), max(0.0, back + 10 - time.monotonic()),
                   f"{proxy.name} to report the control plane up")  # fmt: skip
