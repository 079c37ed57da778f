"""Cores driven over in-memory storage for the simulator and the scenario tests:
:class:`LocalNode` persists each Ready synchronously (the reference driver loop);
:class:`AsyncNode` drives a core the way control.node.RaftNode does, with a write in
flight across ticks and steps."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from control.raft.checkers import chain_digest
from control.raft.config import RaftConfig
from control.raft.core import RaftCore
from control.raft.memstore import MemoryStorage
from control.raft.messages import Message
from control.raft.ready import Ready, without_commit_only_hard_state
from control.raft.simdisk import SimDisk, Write, WritePlan, planned_writes
from control.raft.storage import Storage, load_state, persist_compaction, persist_ready
from control.raft.types import Entry, Snapshot

Send = Callable[[tuple[Message, ...]], None]


class DigestStateMachine:
    """A state machine whose whole state is a hash chain over the applied commands."""

    __slots__ = ("digest", "index")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.index = 0
        self.digest = b""
        if snapshot is not None:
            self.restore(snapshot.data)

    def apply(self, entry: Entry) -> None:
        if entry.index != self.index + 1:
            raise AssertionError(f"applied {entry.index} after {self.index}")
        self.index = entry.index
        self.digest = chain_digest(self.digest, entry)

    def apply_ready(self, rd: Ready) -> None:
        """Restores the Ready's snapshot, if any, then applies its committed entries."""
        if rd.snapshot is not None:
            self.restore(rd.snapshot.data)
        for entry in rd.committed_entries:
            self.apply(entry)

    def snapshot(self) -> bytes:
        return self.index.to_bytes(8, "big") + self.digest

    def restore(self, data: bytes) -> None:
        self.index, self.digest = decode_snapshot(data)


def decode_snapshot(data: bytes) -> tuple[int, bytes]:
    """The (index, digest) a DigestStateMachine snapshot holds."""
    return int.from_bytes(data[:8], "big"), data[8:]


class LocalNode:
    """One core, its durable storage and its state machine."""

    def __init__(
        self, config: RaftConfig, rng: random.Random, storage: MemoryStorage | None = None
    ) -> None:
        """Starts (or restarts, given the storage of a crashed node) a node."""
        self.storage = storage if storage is not None else MemoryStorage()
        state = load_state(self.storage)
        self.core = RaftCore(config, rng, state)
        self.sm = DigestStateMachine(state.snapshot)

    def process_ready(self, send: Send, storage: Storage | None = None) -> Ready | None:
        """Persists, sends, applies and advances one Ready, sending before persisting when
        the Ready allows it. ``storage`` overrides where writes go (to inject a crash
        part-way through, after any early messages left)."""
        if not self.core.has_ready():
            return None
        rd = self.core.ready()
        if rd.messages_may_precede_persist:
            send(rd.messages)
        persist_ready(storage if storage is not None else self.storage, rd)
        if not rd.messages_may_precede_persist:
            send(rd.messages)
        self.sm.apply_ready(rd)
        self.core.advance(rd)
        return rd

    def maybe_snapshot(self, storage: Storage | None = None) -> None:
        """Takes and persists a local snapshot if enough entries were applied."""
        if self.core.snapshot_due:
            compaction = self.core.compact(self.sm.index, self.sm.snapshot())
            persist_compaction(storage if storage is not None else self.storage, compaction)


@dataclass(slots=True)
class WriteInFlight:
    """The one persist an AsyncNode has in flight, and the Ready it carries out (None for a
    compaction)."""

    writes: tuple[Write, ...]
    ready: Ready | None
    started: int
    plan: WritePlan
    error: str | None = None
    """Set once the write failed: ``writes`` then starts at the failed call."""


class AsyncNode:
    """A core driven as control.node.RaftNode drives it, on the simulator's clock.

    At most one write is in flight; it lands when the simulator's :class:`WritePlan` says.
    Meanwhile the node ticks and steps messages, sending after each what
    ``take_messages`` releases (a leader's appends and heartbeats, a follower's heartbeat
    answers); the rest of the core's output gathers into the next Ready. A Ready that
    needs no write is sent and applied at once; one that does sends its messages before
    the write only when ``messages_may_precede_persist``, else when the write lands. A
    write in flight for ``stall_ticks`` marks the storage stalled until it lands. A failed
    write stops the node (``failure``): it sends, applies and acknowledges nothing more.
    """

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        disk: SimDisk,
        now: int,
        send: Send,
        applied: Callable[[Ready], None],
        plan: Callable[[int], WritePlan],
    ) -> None:
        """Restarts from ``disk`` (StorageError if it refuses to open); ``applied`` is told
        of every Ready applied, ``plan`` draws how a persist of that many writes ends."""
        self.disk = disk
        state = load_state(disk.open(now))
        self.core = RaftCore(config, rng, state)
        self.sm = DigestStateMachine(state.snapshot)
        self.now = now
        self.in_flight: WriteInFlight | None = None
        self.failure: str | None = None
        self._send = send
        self._applied = applied
        self._plan = plan
        # control.node.DISK_STALL_TIMEOUT: twice the longest election timeout.
        self._stall_ticks = 2 * config.election_ticks_max

    def tick(self, now: int) -> None:
        self.now = now
        self._check_stall()
        self.core.tick()
        self._send_early()
        self._drive()

    def step(self, message: Message) -> None:
        self.core.step(message)
        self._send_early()
        self._drive()

    def poll_disk(self, now: int) -> None:
        """Lands the write in flight if its time has come, then carries on."""
        self.now = now
        w = self.in_flight
        if w is None or w.error is not None or w.plan.done_at is None or w.plan.done_at > now:
            return
        if w.plan.fails_at is not None:
            self.disk.store(w.writes[: w.plan.fails_at])
            w.writes = w.writes[w.plan.fails_at :]
            w.error = f"{w.writes[0].name} failed: {w.plan.error}"
            # control.node.RaftNode._fail: a node that cannot persist stops.
            self.failure = f"raft driver stopped: {w.error}"
            return
        self.disk.store(w.writes)
        self.in_flight = None
        if self.core.storage_stalled:
            self.core.set_storage_stalled(False)
        if w.ready is not None:
            if not w.ready.messages_may_precede_persist:
                self._send(w.ready.messages)
            self._apply(w.ready)
        self._drive()

    def _send_early(self) -> None:
        if self.in_flight is not None and self.failure is None:
            self._send(self.core.take_messages())

    def _check_stall(self) -> None:
        w = self.in_flight
        if (
            w is not None
            and not self.core.storage_stalled
            and self.now - w.started >= self._stall_ticks
        ):
            self.core.set_storage_stalled(True)

    def _drive(self) -> None:
        if self.in_flight is not None or self.failure is not None:
            return
        core = self.core
        while core.has_ready():
            rd = core.ready()
            durable = without_commit_only_hard_state(rd, self.disk.storage.load_hard_state())
            if not durable.persists:
                self._send(rd.messages)
                self._apply(rd)
                continue
            if rd.messages_may_precede_persist:
                self._send(rd.messages)
            self._start(functools.partial(persist_ready, ready=durable), rd)
            return
        if core.snapshot_due:
            compaction = core.compact(self.sm.index, self.sm.snapshot())
            self._start(functools.partial(persist_compaction, compaction=compaction), None)

    def _start(self, persist: Callable[[Storage], None], rd: Ready | None) -> None:
        writes = planned_writes(self.disk.storage, persist)
        self.in_flight = WriteInFlight(writes, rd, self.now, self._plan(len(writes)))

    def _apply(self, rd: Ready) -> None:
        self.sm.apply_ready(rd)
        self.core.advance(rd)
        self._applied(rd)
