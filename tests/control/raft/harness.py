"""A hand-driven cluster for scenario tests: messages move only when a test says so."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from control.raft.config import RaftConfig
from control.raft.core import RaftCore
from control.raft.memstore import MemoryStorage
from control.raft.messages import Message
from control.raft.simnode import LocalNode
from control.raft.types import Entry, EntryKind, HardState, NodeId, ReadState, Role

Drop = Callable[[Message], bool]


def log_of(terms: list[int]) -> list[Entry]:
    """Entries 1..n with the given terms."""
    return [Entry(i, t, EntryKind.NORMAL, f"{i}@{t}".encode()) for i, t in enumerate(terms, 1)]


class Cluster:
    def __init__(self, n: int, seed: int = 0, **config: Any) -> None:
        self.ids = tuple(range(1, n + 1))
        self._config = config
        self._seed = seed
        self.nodes: dict[NodeId, LocalNode] = {}
        for i in self.ids:
            self.nodes[i] = LocalNode(self.config(i), random.Random(seed * 100 + i))
        self.down: set[NodeId] = set()
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.delivered: list[Message] = []
        self.read_states: dict[NodeId, list[ReadState]] = {i: [] for i in self.ids}
        self._pending: list[Message] = []

    def config(self, i: NodeId) -> RaftConfig:
        return RaftConfig(node_id=i, peers=self.ids, **self._config)

    def core(self, i: NodeId) -> RaftCore:
        return self.nodes[i].core

    def seed_state(self, i: NodeId, term: int, entries: list[Entry], commit: int = 0) -> None:
        """Replaces node ``i`` with one restarted from the given durable state."""
        storage = MemoryStorage()
        if entries:
            storage.append(entries)
        storage.save_hard_state(HardState(term, None, commit))
        self.nodes[i] = LocalNode(self.config(i), random.Random(self._seed * 100 + i), storage)

    def restart(self, i: NodeId) -> None:
        """Crash-restarts node ``i`` from its storage; in-flight messages to it are lost."""
        node = self.nodes[i]
        self.nodes[i] = LocalNode(self.config(i), random.Random(-i), node.storage)
        self._pending = [m for m in self._pending if m.to != i]

    # ----------------------------------------------------------------- network

    def isolate(self, i: NodeId) -> None:
        self.cut |= {(i, j) for j in self.ids if j != i} | {(j, i) for j in self.ids if j != i}

    def heal(self) -> None:
        self.cut.clear()
        self.down.clear()

    def collect(self) -> None:
        """Persists and applies every Ready and queues its messages."""
        for i in self.ids:
            if i in self.down:
                continue
            rd = self.nodes[i].process_ready(self._pending.extend)
            if rd is not None:
                self.read_states[i].extend(rd.read_states)
            self.nodes[i].maybe_snapshot()

    def stabilize(self, drop: Drop | None = None, rounds: int = 100) -> int:
        """Delivers messages until none are left; returns how many were delivered."""
        count = 0
        for _ in range(rounds):
            self.collect()
            if not self._pending and not self._any_ready():
                return count
            batch, self._pending = self._pending, []
            for m in batch:
                if m.to in self.down or (m.frm, m.to) in self.cut or (drop and drop(m)):
                    continue
                self.delivered.append(m)
                self.core(m.to).step(m)
                count += 1
        raise AssertionError("messages still flowing after the round limit")

    def _any_ready(self) -> bool:
        return any(self.core(i).has_ready() for i in self.ids if i not in self.down)

    def tick(self, ids: tuple[NodeId, ...] | None = None, times: int = 1) -> None:
        for _ in range(times):
            for i in ids or self.ids:
                if i not in self.down:
                    self.core(i).tick()
            self.stabilize()

    def elect(self, i: NodeId, drop: Drop | None = None, attempts: int = 3) -> None:
        """Times out node ``i`` alone and runs the election, retrying a few timeouts."""
        core = self.core(i)
        for _ in range(attempts):
            for _ in range(core.config.election_ticks_max):
                core.tick()
                if core.role is not Role.FOLLOWER:
                    break
            self.stabilize(drop)
            if core.role is Role.LEADER:
                return
        raise AssertionError(f"node {i} is {core.role} after {attempts} election timeouts")

    def leaders(self) -> list[NodeId]:
        return [i for i in self.ids if i not in self.down and self.core(i).role is Role.LEADER]

    def log_terms(self, i: NodeId) -> list[int]:
        core = self.core(i)
        entries = core.entries(core.first_index, core.last_index + 1)
        return [e.term for e in entries]
