"""A core driven synchronously over in-memory storage: the reference driver loop used by
the simulator and the scenario tests."""

from __future__ import annotations

import random
from collections.abc import Callable

from control.raft.checkers import chain_digest
from control.raft.config import RaftConfig
from control.raft.core import RaftCore
from control.raft.memstore import MemoryStorage
from control.raft.messages import Message
from control.raft.ready import Ready
from control.raft.storage import Storage, load_state, persist_compaction, persist_ready
from control.raft.types import Entry, Snapshot


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

    def process_ready(
        self, send: Callable[[tuple[Message, ...]], None], storage: Storage | None = None
    ) -> Ready | None:
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
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data)
        for entry in rd.committed_entries:
            self.sm.apply(entry)
        self.core.advance(rd)
        return rd

    def maybe_snapshot(self, storage: Storage | None = None) -> None:
        """Takes and persists a local snapshot if enough entries were applied."""
        if self.core.snapshot_due:
            compaction = self.core.compact(self.sm.index, self.sm.snapshot())
            persist_compaction(storage if storage is not None else self.storage, compaction)
