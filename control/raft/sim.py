"""Deterministic fault simulator for the Raft core.

One seed determines a whole run: the fault rates, the cluster's configuration, every fault
and every client request. A run has a fault phase of ``steps`` ticks (message drop,
duplication, delay and reordering; symmetric and asymmetric partitions; pauses; crashes
that lose unsynced state, some part-way through persisting a Ready) and then a liveness
phase: faults heal and, within ``liveness_ticks``, a leader must exist and every
acknowledged proposal must be applied on every node. The checkers run after every tick.

Two drivers: by default each node persists a Ready synchronously within a tick
(:class:`LocalNode`). With ``async_driver`` each node is an :class:`AsyncNode`, driven as
control.node drives the core: a persist stays in flight for ticks while the node ticks and
steps messages, and the disk (:class:`SimDisk`) adds its own faults: crashes that land
part-way through a persist and lose what was not yet synced, write errors (ENOSPC, EIO)
that stop a node, hung writes (that stall a node) and bit rot (that stops a node from
starting again, on at most as many nodes as a quorum tolerates losing). Each node's disk
is a DiskStorage on a FaultyFileSystem (control.raft.faultfs): a crash loses power or
kills the process, tearing or dropping what was unsynced, and a restarted node loads what
DiskStorage reads back from the files.

Usage: ``python -m control.raft.sim --seeds N [--seed S] [--steps M] [--nodes 3|5]
[--async-driver]``.
Exits 1 and prints the failing seed on any violation.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import heapq
import multiprocessing
import random
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from control.raft.checkers import DurableLog, NodeView, SafetyChecker, Violation
from control.raft.config import RaftConfig
from control.raft.errors import NotLeader, RequestDropped, StorageError
from control.raft.faultfs import FaultyFileSystem
from control.raft.log import LogSafetyError
from control.raft.memstore import MemoryStorage
from control.raft.messages import Message
from control.raft.ready import Ready
from control.raft.simdisk import SimDisk, Write, WritePlan
from control.raft.simnode import AsyncNode, LocalNode, decode_snapshot
from control.raft.types import Entry, HardState, NodeId, Role, Snapshot

MAX_IN_FLIGHT = 20_000
PAYLOAD_SPREAD = 512
"""The async driver's proposals carry up to this many bytes of padding (as a registry
command is some hundreds of bytes of JSON), so their records span disk sectors and a crash
can tear one."""
TRACE_LINES = 200


@dataclass(frozen=True, slots=True)
class SimOptions:
    nodes: int = 3
    steps: int = 300
    liveness_ticks: int = 300
    unsafe_commit_old_term: bool = False
    """TEST ONLY: runs the cores with the planted Figure 8 commit bug."""
    async_driver: bool = False
    """Drive each node as control.node does, with persists in flight and disk faults."""


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Per-tick probabilities (and limits) drawn once per seed, so seeds differ in kind.

    ``crash_mid_persist`` and ``defer_ready`` shape the synchronous driver alone (the async
    driver's persists are in flight across ticks anyway); the disk rates are drawn for the
    async driver alone, after the others, so the synchronous driver's seeds are unchanged.
    """

    drop: float
    duplicate: float
    max_delay: int
    partition: float
    pause: float
    crash: float
    crash_mid_persist: float
    defer_ready: float
    propose: float
    read: float
    transfer: float
    leader_churn: float
    """Chance that a new leader is crashed or isolated within a few ticks of winning,
    which leaves partly replicated terms behind (the setting of Raft's Figure 8)."""
    disk_hang: float = 0.0
    """Per persist: it lands late, up to three stall bounds late, or not until the run heals."""
    disk_error: float = 0.0
    """Per persist: one of its writes fails (ENOSPC or EIO) and the node stops."""
    rot: float = 0.0
    """Per tick: a node's disk rots, so it never starts again."""

    @classmethod
    def draw(cls, rng: random.Random, async_driver: bool = False) -> FaultRates:
        rates = cls(
            drop=rng.choice((0.0, 0.01, 0.05, 0.15)),
            duplicate=rng.choice((0.0, 0.02, 0.1)),
            max_delay=rng.choice((1, 2, 3, 4)),
            partition=rng.choice((0.0, 0.01, 0.03)),
            pause=rng.choice((0.0, 0.01, 0.03)),
            crash=rng.choice((0.0, 0.005, 0.02, 0.05)),
            crash_mid_persist=rng.choice((0.0, 0.3)),
            defer_ready=rng.choice((0.0, 0.1, 0.3)),
            propose=rng.choice((0.05, 0.2, 0.5)),
            read=rng.choice((0.0, 0.05, 0.2)),
            transfer=rng.choice((0.0, 0.005, 0.02)),
            leader_churn=rng.choice((0.0, 0.0, 0.3, 0.7)),
        )
        if not async_driver:
            return rates
        return dataclasses.replace(
            rates,
            disk_hang=rng.choice((0.0, 0.0, 0.002, 0.01)),
            disk_error=rng.choice((0.0, 0.0, 0.002, 0.005)),
            rot=rng.choice((0.0, 0.0, 0.002)),
        )

    def healed(self) -> FaultRates:
        """No faults and no client load; messages still arrive after a short delay."""
        quiet = dict.fromkeys((f.name for f in dataclasses.fields(self)), 0.0)
        return FaultRates(**quiet | {"max_delay": min(self.max_delay, 2)})  # type: ignore[arg-type]


class _Crash(Exception):
    """Raised by :class:`_CrashingStorage` to stop a node part-way through persisting."""


class _CrashingStorage:
    """Storage that lets ``ops`` writes through, then crashes the node."""

    def __init__(self, inner: MemoryStorage, ops: int) -> None:
        self._inner = inner
        self._ops = ops

    def _spend(self) -> None:
        if self._ops == 0:
            raise _Crash
        self._ops -= 1

    def first_index(self) -> int:
        return self._inner.first_index()

    def load_entries(self) -> list[Entry]:
        return self._inner.load_entries()

    def append(self, entries: Sequence[Entry]) -> None:
        self._spend()
        self._inner.append(entries)

    def compact(self, through: int) -> None:
        self._spend()
        self._inner.compact(through)

    def reset(self, index: int) -> None:
        self._spend()
        self._inner.reset(index)

    def load_hard_state(self) -> HardState:
        return self._inner.load_hard_state()

    def save_hard_state(self, hard_state: HardState) -> None:
        self._spend()
        self._inner.save_hard_state(hard_state)

    def load_snapshot(self) -> Snapshot | None:
        return self._inner.load_snapshot()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._spend()
        self._inner.save_snapshot(snapshot)


class _Network:
    """Messages in flight, delivered in (time, sequence) order; links can be cut."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0
        self.blocked: set[tuple[NodeId, NodeId]] = set()

    def send(self, m: Message, now: int, rates: FaultRates) -> None:
        rng = self._rng
        if len(self._queue) >= MAX_IN_FLIGHT or rng.random() < rates.drop:
            return
        copies = 2 if rng.random() < rates.duplicate else 1
        for _ in range(copies):
            self._seq += 1
            at = now + rng.randint(1, rates.max_delay)
            heapq.heappush(self._queue, (at, self._seq, m))

    def hold(self, m: Message, now: int) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (now + 1, self._seq, m))

    def due(self, now: int) -> Iterator[Message]:
        queue = self._queue
        while queue and queue[0][0] <= now:
            m = heapq.heappop(queue)[2]
            if (m.frm, m.to) not in self.blocked:
                yield m


class _SimNode:
    """A node slot in the cluster: survives crashes, which replace its node."""

    def __init__(self, config: RaftConfig) -> None:
        self.config = config
        self.storage = MemoryStorage()
        self.disk: SimDisk | None = None
        """The async driver's disk over ``storage``; None with the synchronous driver."""
        self.persist_ticks = 0
        """The async driver's disk speed: a persist lands 1 to this many ticks after it
        starts. Drawn per node, so a leader's disk can be slower than a follower's round
        trip, and its followers acknowledge entries its own write still holds."""
        self.incarnation = 0
        self.node: LocalNode | AsyncNode | None = None
        self.paused_until = 0
        self.restart_at = 0

    @property
    def id(self) -> NodeId:
        return self.config.node_id

    @property
    def lost(self) -> bool:
        """Its disk rotted: it never starts again and never votes again."""
        return self.disk is not None and self.disk.rotted

    def running(self, now: int) -> LocalNode | AsyncNode | None:
        return self.node if self.node is not None and now >= self.paused_until else None


class Simulation:
    """One seeded run. :meth:`run` raises :class:`Violation` on any failed invariant."""

    def __init__(self, seed: int, options: SimOptions) -> None:
        self.seed = seed
        self.options = options
        self.rng = random.Random(seed)
        self.rates = FaultRates.draw(self.rng, options.async_driver)
        self.now = 0
        self.trace: deque[str] = deque(maxlen=TRACE_LINES)
        ids = tuple(range(1, options.nodes + 1))
        max_entries = self.rng.choice((1, 3, 64))
        threshold = self.rng.choice((5, 20, 1024))
        trailing = self.rng.choice((0, 3))
        self.slots = [
            _SimNode(
                RaftConfig(
                    node_id=i,
                    peers=ids,
                    max_entries_per_msg=max_entries,
                    snapshot_threshold=threshold,
                    snapshot_trailing=trailing,
                    unsafe_commit_old_term=options.unsafe_commit_old_term,
                )
            )
            for i in ids
        ]
        for slot in self.slots:
            if options.async_driver:
                slot.disk = SimDisk(
                    slot.storage, functools.partial(self._on_write, slot), FaultyFileSystem()
                )
                slot.persist_ticks = self.rng.choice((1, 2, 4, 8))
            slot.node = self._new_node(slot)
        self.network = _Network(random.Random(self.rng.getrandbits(64)))
        self.checker = SafetyChecker(quorum=options.nodes // 2 + 1)
        self._proposals: dict[bytes, tuple[NodeId, int, int]] = {}
        self._reads: dict[bytes, int] = {}
        self._requests = 0
        self._leaders: dict[NodeId, int] = {}
        self._churn: list[tuple[int, NodeId]] = []
        self._stored_logs_shrank = False
        """Set when a stored log lost entries, the only way an acknowledged one can vanish."""
        self._heal_at = 0
        self._checked: dict[NodeId, tuple[int, int, Role, int, int]] = {}
        """What the checkers last saw of each node: a view that has not changed since passes
        every check it passed before, so it is not built again."""

    def _node_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    def _new_node(self, slot: _SimNode) -> LocalNode | AsyncNode:
        """Starts a node on the slot's storage; StorageError if its disk refuses to open."""
        rng = self._node_rng()
        if slot.disk is None:
            return LocalNode(slot.config, rng, slot.storage)
        return AsyncNode(
            slot.config,
            rng,
            slot.disk,
            self.now,
            self._send,
            functools.partial(self._observe_applied, slot),
            functools.partial(self._plan_write, slot),
        )

    def _log(self, text: str) -> None:
        self.trace.append(f"t={self.now} {text}")

    # ----------------------------------------------------------------- phases

    def run(self) -> None:
        try:
            self._run()
        except LogSafetyError as e:
            raise Violation("log safety", f"a core refused an unsafe log change: {e}") from e

    def _run(self) -> None:
        for _ in range(self.options.steps):
            self._step(faults=True)
        self._heal()
        for _ in range(self.options.liveness_ticks):
            self._step(faults=False)
            if self._live():
                return
        raise Violation("liveness", self._describe())

    def _heal(self) -> None:
        self._log("heal")
        self.rates = self.rates.healed()
        self.network.blocked.clear()
        self._churn.clear()
        for slot in self.slots:
            slot.paused_until = 0
            if slot.disk is not None:
                slot.disk.failing_until = 0
            if isinstance(slot.node, AsyncNode) and slot.node.in_flight is not None:
                plan = slot.node.in_flight.plan
                plan.fails_at = None
                if plan.done_at is None:
                    plan.done_at = self.now + 1
            if slot.node is None and not slot.lost:
                self._restart(slot)

    def _live(self) -> bool:
        target = self.checker.max_acked
        has_leader = False
        for slot in self.slots:
            if slot.lost:
                continue
            node = slot.node
            if node is None or node.sm.index < target:
                return False
            has_leader = has_leader or node.core.role is Role.LEADER
        return has_leader

    def _describe(self) -> str:
        parts = []
        for slot in self.slots:
            n = slot.node
            if n is None:
                parts.append(f"{slot.id}:down")
            else:
                c = n.core
                parts.append(f"{slot.id}:{c.role.value}/t{c.term}/c{c.commit_index}/a{n.sm.index}")
        return (
            f"no convergence within {self.options.liveness_ticks} ticks: "
            + " ".join(parts)
            + (f"; max acknowledged index {self.checker.max_acked}")
        )

    # ----------------------------------------------------------------- one tick

    def _step(self, faults: bool) -> None:
        self.now += 1
        now = self.now
        if faults:
            self._inject_faults()
            self._client_requests()
        for slot in self.slots:
            if slot.node is None and 0 < slot.restart_at <= now:
                self._restart(slot)
        for slot in self.slots:
            node = slot.running(now)
            if isinstance(node, AsyncNode):
                node.poll_disk(now)
                if node.failure is not None:
                    self._log(f"node {slot.id} stops: {node.failure}")
                    self._crash(slot)
                else:
                    node.tick(now)
            elif node is not None:
                node.core.tick()
                self._send(node.core.take_messages())
        for m in self.network.due(now):
            slot = self.slots[m.to - 1]
            if slot.node is None:
                continue
            node = slot.running(now)
            if node is None:
                self.network.hold(m, now)
            elif isinstance(node, AsyncNode):
                node.step(m)
            else:
                node.core.step(m)
                self._send(node.core.take_messages())
        for slot in self.slots:
            node = slot.running(now)
            if isinstance(node, LocalNode) and not (
                self.rates.defer_ready and self.rng.random() < self.rates.defer_ready
            ):
                self._handle_ready(slot, node)
        self._after_step()
        if self._stored_logs_shrank:
            self._stored_logs_shrank = False
            self.checker.check_acked_durable(self._durable_copies)

    def _after_step(self) -> None:
        views = []
        for slot in self.slots:
            node = slot.node
            if node is None:
                continue
            core = node.core
            if core.role is Role.LEADER and self._leaders.get(slot.id) != core.term:
                self._leaders[slot.id] = core.term
                self._log(f"node {slot.id} leads term {core.term}")
                if self.rates.leader_churn and self.rng.random() < self.rates.leader_churn:
                    self._churn.append((self.now + self.rng.randint(0, 4), slot.id))
            seen = (slot.incarnation, core.term, core.role, core.commit_index, core.applied_index)
            if self._checked.get(slot.id) == seen:
                continue
            self._checked[slot.id] = seen
            views.append(
                NodeView(
                    slot.id,
                    slot.incarnation,
                    core.term,
                    core.role,
                    core.commit_index,
                    core.applied_index,
                    core.first_index,
                    core.term_at,
                )
            )
        self.checker.after_step(views, self._durable_logs)

    def _durable_logs(self) -> list[DurableLog]:
        logs = []
        for slot in self.slots:
            if slot.lost:
                continue
            st = slot.storage
            snap = st.load_snapshot()
            logs.append(
                DurableLog(
                    slot.id, st.last_index, st.last_term, snap.index if snap else 0, st.term_at
                )
            )
        return logs

    def _handle_ready(self, slot: _SimNode, node: LocalNode) -> None:
        crash_ops = None
        if self.rates.crash_mid_persist and self.rng.random() < self.rates.crash * (
            self.rates.crash_mid_persist
        ):
            crash_ops = self.rng.randrange(3)
        stored_last = slot.storage.last_index
        storage = None if crash_ops is None else _CrashingStorage(slot.storage, crash_ops)
        try:
            rd = node.process_ready(self._send, storage)
            if rd is not None:
                if rd.snapshot is not None or (rd.entries and rd.entries[0].index <= stored_last):
                    self._stored_logs_shrank = True
                self._observe_ready(slot, rd)
            node.maybe_snapshot(storage)
        except _Crash:
            self._log(f"node {slot.id} crashes after {crash_ops} writes")
            self._stored_logs_shrank = True
            self._crash(slot)

    def _send(self, messages: tuple[Message, ...]) -> None:
        for m in messages:
            self.network.send(m, self.now, self.rates)

    def _observe_ready(self, slot: _SimNode, rd: Ready) -> None:
        checker = self.checker
        if rd.entries:
            first = rd.entries[0].index
            checker.on_persist(slot.id, rd.entries, slot.storage.term_at(first - 1))
        if rd.hard_state is not None:
            checker.on_durable_commit(slot.id, rd.hard_state.commit)
        self._observe_applied(slot, rd)

    def _on_write(self, slot: _SimNode, write: Write) -> None:
        """The async driver's ``write`` is about to land durably on ``slot``'s disk."""
        stored, arg = slot.storage, write.arg
        if isinstance(arg, tuple):
            first = arg[0].index
            if first <= stored.last_index:
                self._stored_logs_shrank = True
            self.checker.on_persist(slot.id, arg, stored.term_at(first - 1))
        elif isinstance(arg, HardState):
            self.checker.on_durable_commit(slot.id, arg.commit)
        elif write.name == "reset":
            self._stored_logs_shrank = True

    def _observe_applied(self, slot: _SimNode, rd: Ready) -> None:
        checker = self.checker
        if rd.snapshot is not None:
            index, digest = decode_snapshot(rd.snapshot.data)
            checker.on_restore(slot.id, index, digest)
        for entry in rd.committed_entries:
            checker.on_apply(slot.id, entry)
            proposal = self._proposals.get(entry.data)
            if proposal is not None and proposal == (slot.id, entry.index, entry.term):
                del self._proposals[entry.data]
                checker.on_ack(entry, self._durable_copies(entry))
        for rs in rd.read_states:
            checker.on_read(slot.id, rs.index, self._reads.pop(rs.ctx))

    def _durable_copies(self, entry: Entry) -> int:
        """How many nodes hold ``entry`` durably. A lost node counts: it can never vote
        again, so every quorum of the rest still meets a holder if enough of them hold it."""
        copies = 0
        for slot in self.slots:
            if slot.lost:
                copies += 1
                continue
            snap = slot.storage.load_snapshot()
            if slot.storage.term_at(entry.index) == entry.term or (
                snap is not None and snap.index >= entry.index
            ):
                copies += 1
        return copies

    # ----------------------------------------------------------------- faults

    def _inject_faults(self) -> None:
        rng, rates, now = self.rng, self.rates, self.now
        if self._heal_at == now:
            self.network.blocked.clear()
            self._log("churn isolation healed")
        for at, node_id in [c for c in self._churn if c[0] <= now]:
            self._churn.remove((at, node_id))
            slot = self.slots[node_id - 1]
            if slot.node is None:
                continue
            if rng.random() < 0.5:
                self._log(f"churn: leader {node_id} crashes")
                self._crash(slot)
            else:
                self._isolate(node_id)
                self._heal_at = now + rng.randint(5, 40)
        if rng.random() < rates.partition:
            self._repartition()
        if rng.random() < rates.pause:
            slot = self._victim()
            if slot.node is not None and slot.paused_until <= now:
                slot.paused_until = now + rng.randint(1, 30)
                self._log(f"node {slot.id} paused until t={slot.paused_until}")
        if rng.random() < rates.crash:
            slot = self._victim()
            if slot.node is not None:
                self._log(f"node {slot.id} crashes")
                self._crash(slot)
        if rates.rot and rng.random() < rates.rot:
            self._rot(self._victim())

    def _rot(self, slot: _SimNode) -> None:
        """Rots ``slot``'s disk, unless that would lose more nodes than a quorum tolerates.
        The records' checksums find it when the node next starts, which it then refuses,
        so the node is stopped now and stays down."""
        assert slot.disk is not None
        lost = sum(s.lost for s in self.slots)
        if slot.lost or lost >= len(self.slots) - self.checker.quorum:
            return
        if slot.node is not None:
            self._crash(slot)
        if slot.disk.rot(self.rng):
            self._log(f"node {slot.id}'s disk rots")

    def _victim(self) -> _SimNode:
        """A node to fault: a leader half of the time, as leader faults are the subtle ones."""
        leaders = self._leader_slots()
        if leaders and self.rng.random() < 0.5:
            return self.rng.choice(leaders)
        return self.rng.choice(self.slots)

    def _leader_slots(self) -> list[_SimNode]:
        return [s for s in self.slots if s.node is not None and s.node.core.role is Role.LEADER]

    def _isolate(self, node_id: NodeId) -> None:
        ids = [s.id for s in self.slots]
        blocked = self.network.blocked
        blocked.clear()
        blocked.update((a, b) for a in ids for b in ids if (a == node_id) != (b == node_id))
        self._log(f"partition [{node_id}] | rest")

    def _repartition(self) -> None:
        rng, ids = self.rng, [s.id for s in self.slots]
        blocked = self.network.blocked
        blocked.clear()
        self._heal_at = 0
        kind = rng.randrange(4)
        if kind == 0:
            self._log("partition healed")
            return
        if kind == 1:
            self._isolate(self._victim().id)
            return
        if kind == 2:
            side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
            blocked.update((a, b) for a in ids for b in ids if (a in side) != (b in side))
            self._log(f"partition {sorted(side)} | rest")
            return
        for _ in range(rng.randint(1, len(ids))):
            a, b = rng.sample(ids, 2)
            blocked.add((a, b))
        self._log(f"one-way link cuts {sorted(blocked)}")

    def _crash(self, slot: _SimNode) -> None:
        node = slot.node
        if isinstance(node, AsyncNode) and (
            node.in_flight is not None or node.disk.files is not None
        ):
            w = node.in_flight
            writes = () if w is None else w.writes
            failed = w.plan.error_code if w is not None and w.error is not None else None
            node.disk.crash(writes, self.rng, failed)
            self._stored_logs_shrank = True
        slot.node = None
        slot.paused_until = 0
        slot.restart_at = self.now + self.rng.randint(1, 40)

    def _restart(self, slot: _SimNode) -> None:
        slot.incarnation += 1
        slot.restart_at = 0
        try:
            slot.node = self._new_node(slot)
        except StorageError as e:
            self._log(f"node {slot.id} refuses to start: {e}")
            if not slot.lost:
                slot.restart_at = self.now + self.rng.randint(1, 40)
            return
        self._log(f"node {slot.id} restarts")

    def _plan_write(self, slot: _SimNode, writes: int) -> WritePlan:
        """How a persist of ``writes`` storage calls that ``slot`` starts now will end."""
        rng, rates, now = self.rng, self.rates, self.now
        if rates.disk_hang and rng.random() < rates.disk_hang:
            if rng.random() < 0.3:
                return WritePlan(None)
            stall = 2 * slot.config.election_ticks_max
            return WritePlan(now + rng.randint(slot.persist_ticks, 3 * stall))
        done_at = now + rng.randint(1, slot.persist_ticks)
        if rates.disk_error and rng.random() < rates.disk_error:
            assert slot.disk is not None
            slot.disk.failing_until = done_at + rng.randint(0, 60)
            code = rng.choice((errno.ENOSPC, errno.EIO))
            return WritePlan(done_at, rng.randrange(writes), code)
        return WritePlan(done_at)

    def _client_requests(self) -> None:
        rng, rates = self.rng, self.rates
        leaders = self._leader_slots()
        if not leaders:
            return
        slot = rng.choice(leaders)
        assert slot.node is not None
        core = slot.node.core
        try:
            if rng.random() < rates.propose:
                self._requests += 1
                data = f"{self.seed}:{self._requests}".encode()
                if self.options.async_driver:
                    data += b"." * (self._requests * 151 % PAYLOAD_SPREAD)
                index = core.propose(data)
                self._proposals[data] = (slot.id, index, core.term)
            if rng.random() < rates.read:
                self._requests += 1
                ctx = self._requests.to_bytes(8, "big")
                required = self.checker.max_acked
                core.read_index(ctx)
                self._reads[ctx] = required
            if rng.random() < rates.transfer:
                target = rng.choice([s.id for s in self.slots if s.id != slot.id])
                self._log(f"leader {slot.id} transfers to {target}")
                core.transfer_leadership(target)
        except (NotLeader, RequestDropped):
            pass


def run_seed(seed: int, options: SimOptions) -> Violation | None:
    """Runs one seed; returns the violation it found, if any."""
    sim = Simulation(seed, options)
    try:
        sim.run()
    except Violation as v:
        v.add_note("\n".join(sim.trace))
        return v
    return None


def _run_one(args: tuple[int, SimOptions]) -> tuple[int, str | None, str]:
    seed, options = args
    v = run_seed(seed, options)
    if v is None:
        return seed, None, ""
    return seed, str(v), "\n".join(getattr(v, "__notes__", []))


def run_seeds(
    seeds: Sequence[int], options: SimOptions, jobs: int = 1
) -> Iterator[tuple[int, str | None, str]]:
    """Yields (seed, violation or None, trace) for each seed, in order, across ``jobs``."""
    work = [(s, options) for s in seeds]
    if jobs <= 1:
        yield from map(_run_one, work)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_run_one, work, chunksize=16)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m control.raft.sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds to run")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--steps", type=int, default=300, help="fault-phase ticks per seed")
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--trace", action="store_true", help="print the trace of a failure")
    parser.add_argument(
        "--async-driver",
        action="store_true",
        help="drive nodes as control.node does, persists in flight, with disk faults",
    )
    parser.add_argument(
        "--unsafe-commit-old-term",
        action="store_true",
        help="TEST ONLY: plant the Figure 8 commit bug to see the checkers fail",
    )
    args = parser.parse_args(argv)
    options = SimOptions(
        nodes=args.nodes,
        steps=args.steps,
        unsafe_commit_old_term=args.unsafe_commit_old_term,
        async_driver=args.async_driver,
    )
    started = time.monotonic()
    seeds = range(args.seed, args.seed + args.seeds)
    for seed, violation, trace in run_seeds(seeds, options, args.jobs):
        if violation is not None:
            if args.trace:
                print(trace)
            print(f"FAIL seed={seed}: {violation}")
            unsafe = " --unsafe-commit-old-term" if args.unsafe_commit_old_term else ""
            driver = " --async-driver" if args.async_driver else ""
            print(
                f"reproduce: python -m control.raft.sim --seed {seed} --steps {args.steps} "
                f"--nodes {args.nodes}{unsafe}{driver} --trace"
            )
            return 1
    elapsed = time.monotonic() - started
    print(
        f"ok: {args.seeds} seeds from {args.seed}, {args.steps} steps, {args.nodes} nodes, "
        f"{elapsed:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
