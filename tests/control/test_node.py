"""The asyncio Raft driver around the pure core."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from control.metrics import ControlMetrics
from control.node import RaftNode
from control.raft.config import RaftConfig
from control.raft.errors import StorageError
from control.raft.memstore import MemoryStorage
from control.raft.types import Entry


class FullDisk(MemoryStorage):
    def append(self, entries: Sequence[Entry]) -> None:
        raise StorageError("raft.log: No space left on device")


def test_a_node_that_cannot_persist_stops_and_says_why() -> None:
    async def scenario() -> RaftNode:
        # A one-node cluster elects itself and must persist its no-op at once.
        node = RaftNode(RaftConfig(node_id=1, peers=(1,)), FullDisk(), lambda _: None,
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
    async def scenario() -> dict[str, object]:
        node = RaftNode(RaftConfig(node_id=1, peers=(1,)), MemoryStorage(), lambda _: None,
                        ControlMetrics(), random.Random(7))  # fmt: skip
        node.start()
        try:
            async with asyncio.timeout(10):
                await node.wait_for_change(lambda: node.catching_up() is None)
                result = await node.propose(
                    b'{"op": "add_backend", "url": "memcached://10.0.0.1:11211"}'
                )
                await node.read_barrier()
        finally:
            await node.stop()
        assert node.registry.pools["default"].epoch == result["epoch"]
        return result

    assert asyncio.run(scenario())["ok"] is True
