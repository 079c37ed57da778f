"""The asyncio Raft driver around the pure core."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from control.aio_sync import AioSync
from control.commands import DEFAULT_POOL, AddBackend, Stamp, Stamped, command_to_bytes
from control.metrics import ControlMetrics
from control.node import TICK_JITTER, RaftNode
from control.raft import diskstore
from control.raft.config import TICK_SECONDS, RaftConfig
from control.raft.diskstore import DiskStorage
from control.raft.errors import StorageError
from control.raft.memstore import MemoryStorage
from control.raft.messages import HeartbeatResponse, Message
from control.raft.storage import load_state
from control.raft.types import Entry, Role
from control.registry import Applied, Outcome, Registry


class FullDisk(MemoryStorage):
    def append(self, entries: Sequence[Entry]) -> None:
        raise StorageError("raft.log: No space left on device")


def test_a_node_that_cannot_persist_stops_and_says_why() -> None:
    async def scenario() -> RaftNode[Outcome]:
        # A one-node cluster elects itself and must persist its no-op at once.
        node = RaftNode(RaftConfig(node_id=1, peers=(1,)), FullDisk(), Registry(), lambda _: None,
                        ControlMetrics(), random.Random(7))  # fmt: skip
        node.start()
        try:
            async with asyncio.timeout(10):
                await node.failed.wait()
        finally:
            await node.stop()
        return node

    node = asyncio.run(scenario())
    assert node.failure == "raft driver stopped: raft.log: No space left on device"


def test_a_single_node_commits_and_applies_a_proposal() -> None:
    async def scenario() -> Outcome:
        registry = Registry()
        node = RaftNode(RaftConfig(node_id=1, peers=(1,)), MemoryStorage(), registry,
                        lambda _: None, ControlMetrics(), random.Random(7))  # fmt: skip
        node.start()
        try:
            async with asyncio.timeout(10):
                await node.wait_for_change(lambda: node.catching_up() is None)
                result = await node.propose(
                    command_to_bytes(Stamped(AddBackend(DEFAULT_POOL, "memcached://10.0.0.1:11211"),
                                             Stamp(1.0, "test")))
                )  # fmt: skip
                await node.read_barrier()
        finally:
            await node.stop()
        assert isinstance(result, Applied)
        assert registry.pools["default"].epoch == result.epoch
        return result

    assert isinstance(asyncio.run(scenario()), Applied)


class SlowDisk(MemoryStorage):
    """Memory storage whose appends take `delay` seconds, as a saturated disk's fsync does."""

    delay = 0.0

    def append(self, entries: Sequence[Entry]) -> None:
        time.sleep(self.delay)  # runs in the driver's persist thread, as a real fsync does
        super().append(entries)


class SlowFlushes(MemoryStorage):
    """Memory storage that leaves its appends' flushes to the driver, and the flushes it
    takes `delay` seconds over (test_aio_sync shows that real kernel AIO flushes run while
    the loop serves on)."""

    delay = 0.0

    def append_buffered(self, entries: Sequence[Entry]) -> int:
        super().append(entries)
        return -1

    def fdatasync(self, fd: int, done: Callable[[OSError | None], None]) -> None:
        asyncio.get_running_loop().call_later(self.delay, done, None)


@pytest.mark.parametrize("flushes", ["thread", "aio"])
@pytest.mark.parametrize("slow", ["leader", "everyone"])
def test_a_slow_fsync_does_not_starve_heartbeats(slow: str, flushes: str) -> None:
    """A write that outlasts the election timeout several times over costs no election:
    heartbeats and their answers keep flowing while it is in flight. (The nodes share one
    loop, so a write that blocked it would stop every clock at once and cost no election;
    the gaps between heartbeat answers show it.)"""
    delay = 1.5  # election timeout is 0.2-0.4 s; check-quorum steps down after 0.2 s
    # Slow, not hung: below the stall bound (test_hung_disk.py covers writes beyond it).
    stall_bound = 4 * delay

    async def scenario() -> tuple[list[int], list[int], float, list[float]]:
        loop = asyncio.get_running_loop()
        disks = {i: SlowDisk() if flushes == "thread" else SlowFlushes() for i in (1, 2, 3)}
        nodes: dict[int, RaftNode[Outcome]] = {}
        answered: list[float] = []

        def send(messages: tuple[Message, ...]) -> None:
            for m in messages:
                if isinstance(m, HeartbeatResponse):
                    answered.append(time.monotonic())
                loop.call_soon(nodes[m.to].step, [m])

        async def caught_up(node: RaftNode[Outcome]) -> None:
            await node.wait_for_change(lambda: node.catching_up() is None)

        for i, disk in disks.items():
            syncer = disk if isinstance(disk, SlowFlushes) else None
            nodes[i] = RaftNode(RaftConfig(node_id=i, peers=(1, 2, 3)), disk, Registry(), send,
                                ControlMetrics(), random.Random(i), syncer,
                                disk_stall_timeout=stall_bound)  # fmt: skip
            nodes[i].start()
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(*(caught_up(n) for n in nodes.values()))
            terms = [n.soft_state.term for n in nodes.values()]
            leader = next(i for i, n in nodes.items() if n.soft_state.role is Role.LEADER)
            for i, disk in disks.items():
                if slow == "everyone" or i == leader:
                    disk.delay = delay
            started = time.monotonic()
            async with asyncio.timeout(10):
                await nodes[leader].propose(
                    b'{"op": "add_backend", "url": "memcached://10.0.0.1:11211"}'
                )
            elapsed = time.monotonic() - started
            during = [started] + [t for t in answered if t > started] + [started + elapsed]
            gaps = [b - a for a, b in itertools.pairwise(during)]
            return terms, [n.soft_state.term for n in nodes.values()], elapsed, gaps
        finally:
            for node in nodes.values():
                await node.stop()

    before, after, elapsed, gaps = asyncio.run(scenario())
    assert elapsed >= delay  # the write really was slow
    assert after == before, "an election happened during the slow write"
    assert max(gaps) < 0.2, f"no heartbeat answered for {max(gaps):.2f} s during the write"


def tick_times(count: int, stall_in: int | None = None) -> list[float]:
    """When a lone node's first `count` ticks ran. Tick number `stall_in` holds the event
    loop for ten ticks' time, as a long pause (SIGSTOP, a swapped-out process) does."""

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        node = RaftNode(RaftConfig(node_id=1, peers=(1, 2, 3)), MemoryStorage(), Registry(),
                        lambda _: None, ControlMetrics(), random.Random(7))  # fmt: skip
        ticked: list[float] = []
        enough = asyncio.Event()
        tick = node.core.tick

        def recorded_tick() -> None:
            ticked.append(loop.time())
            if len(ticked) == stall_in:
                time.sleep(10 * TICK_SECONDS)
            if len(ticked) == count:
                enough.set()
            tick()

        node.core.tick = recorded_tick  # type: ignore[method-assign]
        node.start()
        try:
            async with asyncio.timeout(10):
                await enough.wait()
        finally:
            await node.stop()
        return ticked

    return asyncio.run(scenario())


def test_ticks_are_jittered_around_the_tick_length() -> None:
    """Whole-tick election timeouts alone would let two nodes that split a vote time out
    together again; jittered ticks make them drift apart."""
    intervals = [b - a for a, b in itertools.pairwise(tick_times(41))]
    assert min(intervals) < 0.8 * TICK_SECONDS < 1.2 * TICK_SECONDS < max(intervals)
    assert 0.8 * TICK_SECONDS < sum(intervals) / len(intervals) < 1.5 * TICK_SECONDS


def test_ticks_missed_while_the_loop_stalled_are_dropped() -> None:
    """Catching up on them would fire a burst: a leader would end its check-quorum window,
    and followers their election timeouts, before any answer could arrive."""
    after_stall = tick_times(16, stall_in=5)[5:]
    intervals = [b - a for a, b in itertools.pairwise(after_stall)]
    assert min(intervals) > 0.8 * (1 - TICK_JITTER) * TICK_SECONDS, intervals


class CountedFlushes:
    def __init__(self, sync: AioSync) -> None:
        self.sync = sync
        self.count = 0

    def fdatasync(self, fd: int, done: Callable[[OSError | None], None]) -> None:
        self.count += 1
        self.sync.fdatasync(fd, done)


@pytest.mark.parametrize("aio", [True, False], ids=["aio", "thread-only"])
def test_a_node_on_disk_keeps_every_acknowledged_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aio: bool
) -> None:
    """With AIO, appends that fit the log's reserved space are flushed by it and the others
    grow the reserve on the disk thread; without it (another OS, a seccomp filter), every
    write runs on the disk thread. Either way, what was acknowledged is on disk."""
    monkeypatch.setattr(diskstore, "RESERVE_BYTES", 2048)
    urls = [f"memcached://10.0.0.{i}:11211" for i in range(1, 41)]

    async def scenario() -> int:
        storage = DiskStorage(tmp_path, create=True)
        flushes = CountedFlushes(AioSync.open(str(tmp_path))) if aio else None
        node = RaftNode(RaftConfig(node_id=1, peers=(1,)), storage, Registry(), lambda _: None,
                        ControlMetrics(), random.Random(7), flushes)  # fmt: skip
        node.start()
        try:
            async with asyncio.timeout(30):
                await node.wait_for_change(lambda: node.catching_up() is None)
                for url in urls:
                    await node.propose(json.dumps({"op": "add_backend", "url": url}).encode())
        finally:
            await node.stop()
            if flushes is not None:
                flushes.sync.close()
            storage.close()
        return 0 if flushes is None else flushes.count

    aio_flushes = asyncio.run(scenario())
    if aio:
        assert 0 < aio_flushes < len(urls)  # some appends grew the reserve instead
    with DiskStorage(tmp_path) as storage:
        state = load_state(storage)
    logged = b"".join(e.data for e in state.entries)
    assert all(url.encode() in logged for url in urls)
