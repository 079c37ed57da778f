"""Three `RaftNode` drivers on one event loop, over memory storage whose writes can be held
as a hung disk holds them, on either write path (the disk thread or AIO flushes)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence

from control.commands import DEFAULT_POOL, AddBackend, Stamp, Stamped, command_to_bytes
from control.metrics import ControlMetrics
from control.node import RaftNode
from control.raft.config import RaftConfig
from control.raft.memstore import MemoryStorage
from control.raft.messages import Message
from control.raft.types import Entry, NodeId, Role
from control.registry import Outcome, Registry

IDS = (1, 2, 3)


class HeldDisk(MemoryStorage):
    """Memory storage whose writes wait on the disk thread while `hold()` is in force."""

    def __init__(self) -> None:
        super().__init__()
        self._released = threading.Event()
        self._released.set()

    @property
    def held(self) -> bool:
        return not self._released.is_set()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def append(self, entries: Sequence[Entry]) -> None:
        self._released.wait()
        super().append(entries)


class HeldFlushes(HeldDisk):
    """HeldDisk that also leaves its appends' flushes to the driver (the AIO path) and
    completes none of them while held."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[Callable[[OSError | None], None]] = []

    def append_buffered(self, entries: Sequence[Entry]) -> int:
        MemoryStorage.append(self, entries)
        return -1

    def fdatasync(self, fd: int, done: Callable[[OSError | None], None]) -> None:
        self._waiting.append(done)
        if not self.held:
            self.release()

    def release(self) -> None:
        super().release()
        loop = asyncio.get_running_loop()
        waiting, self._waiting = self._waiting, []
        for done in waiting:
            loop.call_soon(done, None)


def add_backend(url: str) -> bytes:
    return command_to_bytes(Stamped(AddBackend(DEFAULT_POOL, url), Stamp(time.time(), "test")))


class LocalNodes:
    """Nodes 1-3, each `RaftNode` on `disks[i]`; messages go through the loop, and those for
    which `cut(message)` holds are dropped."""

    def __init__(self, flushes: str, disk_stall_timeout: float | None) -> None:
        aio = flushes == "aio"
        self.disks = {i: HeldFlushes() if aio else HeldDisk() for i in IDS}
        self.metrics = {i: ControlMetrics() for i in IDS}
        self.nodes: dict[NodeId, RaftNode[Outcome]] = {}
        self.cut: Callable[[Message], bool] = lambda _: False
        for i, disk in self.disks.items():
            self.nodes[i] = RaftNode(
                RaftConfig(node_id=i, peers=IDS), disk, Registry(), self._send, self.metrics[i],
                random.Random(i), disk if isinstance(disk, HeldFlushes) else None,
                disk_stall_timeout,
            )  # fmt: skip

    def _send(self, messages: tuple[Message, ...]) -> None:
        loop = asyncio.get_running_loop()
        for m in messages:
            if not self.cut(m):
                loop.call_soon(self.nodes[m.to].step, [m])

    async def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        await asyncio.gather(*(self.caught_up(i) for i in IDS))

    async def caught_up(self, i: NodeId) -> None:
        node = self.nodes[i]
        await node.wait_for_change(lambda: node.catching_up() is None)

    async def stop(self) -> None:
        for disk in self.disks.values():
            disk.release()
        for node in self.nodes.values():
            await node.stop()

    def leader(self) -> NodeId | None:
        leaders = [i for i, n in self.nodes.items() if n.core.role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    async def until(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        """Polls `predicate` every 10 ms until it holds; fails after `within` seconds."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within} s: {what}")
            await asyncio.sleep(0.01)
