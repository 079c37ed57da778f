"""The asyncio driver around the Raft core: ticks it, feeds it messages, and carries out
each Ready in the order its contract states (persist, then send, then apply).

Persisting never blocks the event loop on the device. A Ready of log entries alone (almost
every one) is written to the page cache on the loop and flushed by kernel AIO
(control.aio_sync) where the service has it; anything else, and everything where there is
no AIO, runs on a thread of its own (control.disk_thread). So while an fsync takes its
time, HTTP is served, messages are stepped and ticks keep counting meanwhile, and
what the core lets go before the write completes (a leader's heartbeats, a follower's
answers to them) goes out as it is produced, so heartbeats keep flowing both ways while a
write is in flight.

Up to a bound: a write in flight for longer than `disk_stall_timeout` marks the storage
stalled (RaftCore.set_storage_stalled). A leader then steps down and its heartbeats stop, so
the others elect a leader whose disk works; a stalled node grants no votes and serves no
linearizable read or watch until the write completes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from control.disk_thread import DiskThread
from control.metrics import ControlMetrics
from control.raft.config import TICK_SECONDS, RaftConfig
from control.raft.core import RaftCore
from control.raft.errors import NotLeader, RequestDropped
from control.raft.membership import Membership
from control.raft.messages import Message, shows_durable_state
from control.raft.ready import Ready, without_commit_only_hard_state
from control.raft.storage import (
    BufferedAppend,
    Storage,
    load_state,
    persist_compaction,
    persist_ready,
)
from control.raft.types import EntryKind, NodeId, Role, SoftState
from control.tick_lateness import TickLateness

log = logging.getLogger("ringleader.raft")

PROPOSAL_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
TICK_JITTER = 0.5
DISK_STALL_TIMEOUT = 0.8
"""Twice the longest election timeout at the default timing (RaftConfig's 20 ticks of
TICK_SECONDS): long past any healthy fsync, short enough that a new leader takes over well
within 2 s of a disk hanging."""
APPLY_LAG_SECONDS = 0.5
"""How long applies may stay behind commit without progress before the node counts as behind.
Only a write in flight holds applies back, and a healthy one takes milliseconds."""


class ProposalFailed(Exception):
    """A proposal or read this node could not carry out; `label` is its metric label."""

    label = "failed"


class NotLeaderError(ProposalFailed):
    """Not a failure of the cluster: the caller forwards to `leader`, when one is known."""

    label = "not_leader"

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__("this node is not the leader")
        self.leader = leader


class ProposalDropped(ProposalFailed):
    """Refused before being appended (the core's flow control or a leadership transfer)."""

    label = "dropped"


class ProposalTimeout(ProposalFailed):
    """Not committed, or leadership not confirmed, in time; the outcome is unknown."""

    label = "timeout"


class LeadershipLost(ProposalFailed):
    """This node stopped leading before the proposal or read completed here."""

    label = "lost_leadership"


class DiskStalled(ProposalFailed):
    """This node's storage write is in flight past the bound: its state may be behind."""

    label = "disk_stalled"


R_co = TypeVar("R_co", covariant=True)
R = TypeVar("R")


class StateMachine(Protocol[R_co]):
    """What the driver applies committed entries to (control.registry.Registry)."""

    @property
    def applied_index(self) -> int: ...

    def apply(self, index: int, data: bytes) -> R_co:
        """Applies the command committed at `index`, which follows `applied_index`."""
        ...

    def skip(self, index: int) -> None:
        """Moves past an entry at `index` that carries no command."""
        ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None:
        """Replaces the whole state with the output of `snapshot`."""
        ...


class Fdatasync(Protocol):
    """Flushes a file without blocking the event loop (control.aio_sync.AioSync)."""

    def fdatasync(self, fd: int, done: Callable[[OSError | None], None]) -> None: ...


@dataclass(slots=True)
class _Proposal(Generic[R]):
    term: int
    future: asyncio.Future[R]


class RaftNode(Generic[R]):
    def __init__(
        self,
        config: RaftConfig,
        storage: Storage,
        machine: StateMachine[R],
        send: Callable[[tuple[Message, ...]], None],
        metrics: ControlMetrics,
        rng: random.Random | None = None,
        fdatasync: Fdatasync | None = None,
        disk_stall_timeout: float | None = None,
    ) -> None:
        """`disk_stall_timeout`: seconds a write may be in flight before the node counts its
        storage as stalled; None lets writes take any time."""
        self._storage = storage
        self._buffered = storage if isinstance(storage, BufferedAppend) else None
        self._fdatasync = fdatasync
        self._send = send
        self._metrics = metrics
        state = load_state(storage)
        self._machine = machine
        if state.snapshot is not None:
            machine.restore(state.snapshot.data)
        self._rng = rng or random.Random()
        self.core = RaftCore(config, self._rng, state)
        self._proposals: dict[int, _Proposal[R]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_ids = itertools.count()
        self._changed = asyncio.Event()
        self._soft = self.core.soft_state
        self._ticker_task: asyncio.Task[None] | None = None
        self._writing = False
        self._write_started = 0.0
        self._write_ticks = 0
        self._stall_timeout = disk_stall_timeout
        # When applies last fell behind commit or progressed while behind; None when level.
        self._behind_since: float | None = None
        self._stopped = False
        self._disk = DiskThread("raft-disk")
        self._lateness = TickLateness(metrics.tick_lateness)
        if self._disk.hold_file is not None:
            # Writes are held on the disk thread only: every one must go there.
            self._fdatasync = None
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self.peers_with_state: set[NodeId] = set()
        """Peers seen with durable Raft state since start (control.joining)."""
        self.reachable: Callable[[NodeId], bool] = lambda _: False
        """Whether this node's stream to a peer is open (the service sets the transport's)."""
        self._membership = self.core.membership
        self._membership_watchers: list[Callable[[Membership], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker_task = asyncio.create_task(self._ticker(), name="raft-tick")
        self._drive()

    async def stop(self) -> None:
        self._stopped = True
        if self._ticker_task is not None:
            self._ticker_task.cancel()
            await asyncio.gather(self._ticker_task, return_exceptions=True)
        self._disk.stop()

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            # Jittered, so that two nodes whose election timers started together (a split
            # vote) drift apart: with whole-tick timeouts alone they would time out together
            # again once in (election_ticks_max - election_ticks_min) elections. Ticks missed
            # while the loop stalled (a pause, a swapped-out process) are dropped, as a Go
            # ticker drops them: caught up in a burst, they would end a leader's check-quorum
            # window, and followers' election timeouts, before any answer could arrive.
            if loop.time() - next_tick > TICK_SECONDS:
                next_tick = loop.time()
            next_tick += TICK_SECONDS * self._rng.uniform(1 - TICK_JITTER, 1 + TICK_JITTER)
            await asyncio.sleep(next_tick - loop.time())
            self._lateness.ticked(loop.time() - next_tick)
            self._check_stall()
            self.core.tick()
            self._send_early()
            self._drive()
            self._track_apply_lag(progressed=False)

    # -- inputs ------------------------------------------------------------------------------

    def step(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if message.frm not in self.peers_with_state and shows_durable_state(message):
                self.peers_with_state.add(message.frm)
            self.core.step(message)
        self._send_early()
        self._drive()
        self._track_apply_lag(progressed=False)

    def _send_early(self) -> None:
        """While a write holds up the Readies, sends what may go before it completes
        (heartbeats and their answers), so a slow disk does not look like a dead node."""
        if self._writing:
            self._send(self.core.take_messages())

    async def propose(self, command: bytes) -> R:
        """Replicates `command` and returns the state machine's result once applied here."""
        try:
            index = self.core.propose(command)
        except NotLeader as exc:
            raise NotLeaderError(exc.leader) from None
        except RequestDropped as exc:
            self._metrics.proposals_failed.labels(ProposalDropped.label).inc()
            raise ProposalDropped(str(exc)) from None
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._proposals[index] = _Proposal(self.core.term, future)
        self._drive()
        try:
            return await asyncio.wait_for(asyncio.shield(future), PROPOSAL_TIMEOUT)
        except TimeoutError:
            self._metrics.proposals_failed.labels(ProposalTimeout.label).inc()
            raise ProposalTimeout("not committed in time; outcome unknown") from None
        finally:
            self._proposals.pop(index, None)

    async def read_barrier(self) -> None:
        """Returns once this node may serve a linearizable read (Raft §6.4, ReadIndex)."""
        if self.core.storage_stalled:
            raise DiskStalled(self._stall_reason())
        ctx = next(self._read_ids).to_bytes(8, "big")
        try:
            self.core.read_index(ctx)
        except NotLeader as exc:
            raise NotLeaderError(exc.leader) from None
        except RequestDropped as exc:
            raise ProposalDropped(str(exc)) from None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = future
        self._drive()
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                await self.wait_applied(await future)
        except TimeoutError:
            raise ProposalTimeout("leadership not confirmed in time") from None
        finally:
            self._reads.pop(ctx, None)

    async def wait_applied(self, index: int) -> None:
        await self.wait_for_change(lambda: self._machine.applied_index >= index)

    async def wait_for_change(self, predicate: Callable[[], bool]) -> None:
        """Returns once `predicate()` holds, checking after every apply and every change of
        role or leader."""
        while not predicate():
            await self._changed.wait()

    def _notify_change(self) -> None:
        # Waiters hold the old event, which wakes them all; later waiters get a new one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def hand_over_leadership(self) -> NodeId | None:
        """If this node leads, hands leadership to the follower whose log matches furthest
        (Raft §3.10) and returns the new leader once this node follows it.

        Gives up after one election timeout and returns None: the caller stops anyway, and
        the others then elect a leader as after a crash.
        """
        core = self.core
        matches = core.match_indexes()
        if core.role is not Role.LEADER or not matches:
            return None
        target = max(matches, key=matches.__getitem__)
        core.transfer_leadership(target)
        self._send_early()
        self._drive()
        timeout = core.config.election_ticks_max * TICK_SECONDS
        started = time.perf_counter()

        def followed() -> bool:
            return core.role is not Role.LEADER and core.leader not in (None, core.id)

        try:
            async with asyncio.timeout(timeout):
                await self.wait_for_change(followed)
        except TimeoutError:
            log.warning(
                "leadership not handed over in %.2f s; stopping anyway", timeout,
                extra={"ctx": {"target": target, "match_indexes": matches}},
            )  # fmt: skip
            return None
        log.info(
            "handed leadership over to %s", core.leader,
            extra={"ctx": {"leader": core.leader, "term": core.term, "match_indexes": matches,
                           "seconds": round(time.perf_counter() - started, 4)}},
        )  # fmt: skip
        return core.leader

    # -- membership --------------------------------------------------------------------------

    def watch_membership(self, watcher: Callable[[Membership], None]) -> None:
        """Calls `watcher` with the configuration now and whenever the one in use changes."""
        self._membership_watchers.append(watcher)
        watcher(self._membership)

    async def change_membership(self, change: Callable[[Membership], Membership | None]) -> int:
        """Proposes `change(configuration in use)` and returns its log index once it is
        committed and applied here. `change` returns None when there is nothing to do (a
        retried request): this then waits for the configuration in use to commit, so the
        answer is the same as the first attempt's. MembershipError for a change that is
        not allowed; ProposalFailed as for proposals."""
        core = self.core
        if core.role is not Role.LEADER:
            raise NotLeaderError(core.leader)
        membership = change(core.membership)
        try:
            index = (
                core.membership_index if membership is None else core.propose_membership(membership)
            )
        except NotLeader as exc:
            raise NotLeaderError(exc.leader) from None
        except RequestDropped as exc:
            raise ProposalDropped(str(exc)) from None
        term = core.term
        self._drive()

        def settled() -> bool:
            return self._machine.applied_index >= index or core.term != term

        try:
            async with asyncio.timeout(PROPOSAL_TIMEOUT):
                await self.wait_for_change(settled)
        except TimeoutError:
            raise ProposalTimeout("configuration change not committed in time") from None
        if core.term != term:
            raise LeadershipLost("leadership lost; outcome unknown")
        return index

    def _follow_membership(self) -> None:
        membership = self.core.membership
        if membership is not self._membership:
            self._membership = membership
            log.info(
                "configuration changed",
                extra={"ctx": {"index": self.core.membership_index, **membership.to_json()}},
            )
            for watcher in self._membership_watchers:
                watcher(membership)
        if self.core.removed and self.failure is None:
            self.failure = (
                f"node {self.core.id} was removed from the cluster (ringleader member remove); "
                "it stops for good and its ID can never rejoin"
            )
            log.critical(self.failure)
            self.failed.set()

    # -- carrying out Readies ----------------------------------------------------------------

    def _drive(self) -> None:
        """Carries out the core's Readies until one needs the disk; that write's completion
        drives on.

        Runs inline wherever the core gains work (a step, a tick, a proposal), so an
        answer or a commit costs no extra pass through the event loop. Nothing it calls
        feeds the core, so it never runs inside itself. At most one write is in flight: what
        arrives meanwhile gathers into the next Ready, which is how writes batch under load.
        """
        if self._writing or self._stopped or self.failure is not None:
            return
        try:
            while self.core.has_ready():
                rd = self.core.ready()
                durable = without_commit_only_hard_state(rd, self._storage.load_hard_state())
                if not durable.persists:
                    self._send(rd.messages)
                    self._apply(rd)
                    continue
                if rd.messages_may_precede_persist:
                    self._send(rd.messages)
                self._persist(durable, functools.partial(self._persisted, rd))
                return
            if self.core.snapshot_due:
                self._compact()
        except Exception as exc:
            self._fail(exc)

    def _persisted(self, rd: Ready, seconds: float) -> None:
        self._metrics.fsync_duration.observe(seconds)
        if not rd.messages_may_precede_persist:
            self._send(rd.messages)
        self._apply(rd)

    def _apply(self, rd: Ready) -> None:
        applied_before = self._machine.applied_index
        started = time.perf_counter()
        if rd.snapshot is not None and rd.snapshot.index > self._machine.applied_index:
            self._machine.restore(rd.snapshot.data)
            log.info("installed snapshot", extra={"ctx": {"index": rd.snapshot.index}})
        for entry in rd.committed_entries:
            if entry.index <= self._machine.applied_index:
                continue
            proposal = self._proposals.get(entry.index)
            if proposal is not None and proposal.future.done():
                proposal = None
            if entry.kind is not EntryKind.NORMAL:
                self._machine.skip(entry.index)
            elif proposal is not None and proposal.term == entry.term:
                proposal.future.set_result(self._machine.apply(entry.index, entry.data))
                continue
            else:
                self._machine.apply(entry.index, entry.data)
            # A proposal's own entry has its term, and is never a no-op: this entry is a new
            # leader's, written over it.
            if proposal is not None:
                proposal.future.set_exception(
                    LeadershipLost("overwritten by a new leader; not applied")
                )
        if rd.committed_entries:
            self._metrics.apply_duration.observe(time.perf_counter() - started)
        self.core.advance(rd)
        for read in rd.read_states:
            future = self._reads.get(read.ctx)
            if future is not None and not future.done():
                future.set_result(read.index)
        self._on_soft_state(rd.soft_state)
        self._follow_membership()
        progressed = self._machine.applied_index != applied_before
        if progressed:
            self._metrics.applied_index.set(self._machine.applied_index)
            self._notify_change()
        self._track_apply_lag(progressed)
        self._metrics.commit_index.set(self.core.commit_index)

    def _track_apply_lag(self, progressed: bool) -> None:
        if self.core.commit_index <= self._machine.applied_index:
            self._behind_since = None
        elif progressed or self._behind_since is None:
            self._behind_since = time.monotonic()

    def _persist(self, durable: Ready, then: Callable[[float], None]) -> None:
        """Makes `durable` durable, then runs `then` with the seconds it took, then drives
        on; the event loop serves on meanwhile.

        Entries alone are written here and flushed by AIO, which saves the two thread
        hand-offs a write on the disk thread costs.
        """
        done = functools.partial(self._written, self._start_write(), then)
        if (
            self._fdatasync is not None
            and self._buffered is not None
            and durable.snapshot is None
            and durable.hard_state is None
        ):
            fd = self._buffered.append_buffered(durable.entries)
            if fd is not None:
                self._fdatasync.fdatasync(fd, done)
                return
        self._disk.submit(functools.partial(persist_ready, self._storage, durable), done)

    def _write(self, write: Callable[[], None], then: Callable[[float], None]) -> None:
        """Runs `write` on the disk thread, then `then` with the seconds it took, then
        drives on."""
        self._disk.submit(write, functools.partial(self._written, self._start_write(), then))

    def _start_write(self) -> float:
        self._writing = True
        self._write_ticks = 0
        self._write_started = time.perf_counter()
        return self._write_started

    def _written(
        self, started: float, then: Callable[[float], None], error: Exception | None
    ) -> None:
        self._writing = False
        if self._stopped:
            return
        try:
            if error is not None:
                raise error
            seconds = time.perf_counter() - started
            if self.core.storage_stalled:
                self._end_stall(seconds)
            then(seconds)
        except Exception as exc:
            self._fail(exc)
            return
        self._drive()

    def _check_stall(self) -> None:
        """Marks the storage stalled once the write in flight outlasts the bound.

        Counted in ticks, as election timeouts are: ticks missed while the whole process
        stood still (SIGSTOP, swapped out) are dropped, so it does not take its own pause
        for its disk's.
        """
        if self._stall_timeout is None or not self._writing or self.core.storage_stalled:
            return
        self._write_ticks += 1
        if self._write_ticks * TICK_SECONDS < self._stall_timeout:
            return
        seconds = time.perf_counter() - self._write_started
        led = self.core.role is Role.LEADER
        self.core.set_storage_stalled(True)
        self._metrics.disk_stalled.set(1)
        self._metrics.disk_stalls.inc()
        log.error(
            "disk write in flight for %.2f s, over the %g s bound: %s", seconds,
            self._stall_timeout,
            "stepping down as leader" if led else "refusing votes, reads and watches",
            extra={"ctx": {"seconds": round(seconds, 3), "bound": self._stall_timeout,
                           "stepped_down": led, "term": self.core.term}},
        )  # fmt: skip
        if led:
            self._metrics.is_leader.set(0)
            self._fail_pending("stepped down: a disk write stalled; outcome unknown")
        self._notify_change()

    def _end_stall(self, seconds: float) -> None:
        self.core.set_storage_stalled(False)
        self._metrics.disk_stalled.set(0)
        log.warning(
            "stalled disk write completed after %.2f s; rejoining", seconds,
            extra={"ctx": {"seconds": round(seconds, 3), "term": self.core.term}},
        )  # fmt: skip

    def _stall_reason(self) -> str:
        seconds = time.perf_counter() - self._write_started
        return (
            f"a disk write has been in flight for {seconds:.1f} s (bound {self._stall_timeout:g} s)"
        )

    def _fail(self, exc: Exception) -> None:
        # A node that cannot persist must stop: serving on would answer from state it can
        # no longer make durable.
        self.failure = f"raft driver stopped: {exc}"
        log.critical(self.failure, exc_info=exc)
        self.failed.set()

    def _on_soft_state(self, soft: SoftState) -> None:
        previous, self._soft = self._soft, soft
        self._metrics.term.set(soft.term)
        self._metrics.is_leader.set(1 if soft.role is Role.LEADER else 0)
        self._metrics.has_leader.set(0 if soft.leader is None else 1)
        if soft.leader != previous.leader:
            self._metrics.leader_changes.inc()
            log.info(
                "leader is now %s", soft.leader,
                extra={"ctx": {"leader": soft.leader, "term": soft.term, "role": soft.role.value,
                               "previous_leader": previous.leader}},
            )  # fmt: skip
        if previous.role is Role.LEADER and soft.role is not Role.LEADER:
            self._fail_pending("leadership lost; outcome unknown")
        if (soft.role, soft.leader) != (previous.role, previous.leader):
            self._notify_change()

    def _fail_pending(self, reason: str) -> None:
        """Fails every proposal and read: whatever this node accepted as leader may now never
        complete here."""
        for proposal in self._proposals.values():
            if not proposal.future.done():
                self._metrics.proposals_failed.labels(LeadershipLost.label).inc()
                proposal.future.set_exception(LeadershipLost(reason))
        for future in self._reads.values():
            if not future.done():
                future.set_exception(LeadershipLost(reason))

    def _compact(self) -> None:
        index = self._machine.applied_index
        if index <= (self.core.snapshot.index if self.core.snapshot else 0):
            return
        compaction = self.core.compact(index, self._machine.snapshot())
        self._write(
            functools.partial(persist_compaction, self._storage, compaction),
            lambda _: log.info("compacted log", extra={"ctx": {"snapshot_index": index}}),
        )

    # -- views -------------------------------------------------------------------------------

    def catching_up(self) -> str | None:
        """Why this node's applied state may be behind the cluster's, or None if it is not.

        Knowing a leader is not enough: after a restart the stored commit index may lag
        (the driver does not fsync commit-only changes) and is relearned from the leader.
        Once this node has applied an entry of the current term (the leader's no-op at
        least), it has applied everything committed before this term began, so what it
        serves is current up to normal replication lag. Unless its applies stall behind its
        commit index: a write in flight holds them back, so a node whose disk hangs is
        behind even before the stall bound marks its storage stalled.
        """
        core = self.core
        if core.storage_stalled:
            return self._stall_reason()
        if core.leader is None:
            return "no known leader"
        applied = self._machine.applied_index
        if core.term_at(applied) != core.term:
            return f"applied index {applied} is from before term {core.term}; catching up"
        if (
            self._behind_since is not None
            and time.monotonic() - self._behind_since > APPLY_LAG_SECONDS
        ):
            return f"applied index {applied} lags commit index {core.commit_index}; catching up"
        return None

    @property
    def soft_state(self) -> SoftState:
        return self.core.soft_state

    def status(self) -> dict[str, Any]:
        soft = self.core.soft_state
        return {
            "id": self.core.id,
            "role": "candidate" if soft.role is Role.PRE_CANDIDATE else soft.role.value,
            "term": soft.term,
            "leader": soft.leader,
            "commit_index": self.core.commit_index,
            "applied_index": self._machine.applied_index,
            "last_index": self.core.last_index,
            "disk_stalled": self.core.storage_stalled,
        }
