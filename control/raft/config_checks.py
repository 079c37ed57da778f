"""Invariant checks for membership changes, for randomized tests that change the
configuration under faults.

- Election safety across configurations: at most one leader per term, whatever the
  configuration each leader used.
- At most one change in flight: no log holds two configuration entries above the
  owner's commit index while the owner leads.
- Every committed configuration differs from the one before it by one server
  (membership.one_server_apart), and an ID once removed is never a member again.
- Committed configurations agree: one index never commits two different ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from control.raft.core import RaftCore
from control.raft.membership import Membership, one_server_apart
from control.raft.types import Entry, EntryKind, NodeId, Role


class ConfigViolation(AssertionError):
    """A configuration invariant failed; the message says which and where."""


@dataclass
class ConfigChecker:
    bootstrap: Membership
    leaders: dict[int, NodeId] = field(default_factory=dict)
    committed: dict[int, Membership] = field(default_factory=dict)
    """Committed configurations by log index."""

    def observe_core(self, node: NodeId, core: RaftCore) -> None:
        """Checks election safety and the one-change-in-flight rule on a core's state."""
        if core.role is not Role.LEADER:
            return
        elected = self.leaders.setdefault(core.term, node)
        if elected != node:
            raise ConfigViolation(f"term {core.term} has two leaders: {elected} and {node}")
        lo = max(core.commit_index + 1, core.first_index)
        pending = [e for e in core.entries(lo, core.last_index + 1) if e.kind is EntryKind.CONFIG]
        if len(pending) > 1:
            raise ConfigViolation(
                f"leader {node} has {len(pending)} uncommitted configuration entries at "
                f"{[e.index for e in pending]} (commit {core.commit_index})"
            )

    def observe_committed(self, node: NodeId, entries: tuple[Entry, ...]) -> None:
        """Records configuration entries a node applied, checking them against the rest."""
        configs = [e for e in entries if e.kind is EntryKind.CONFIG]
        for e in configs:
            membership = Membership.from_bytes(e.data)
            known = self.committed.setdefault(e.index, membership)
            if known != membership:
                raise ConfigViolation(
                    f"node {node} committed a different configuration at {e.index}"
                )
        if configs:
            self._check_sequence()

    def _check_sequence(self) -> None:
        previous = self.bootstrap
        for index in sorted(self.committed):
            current = self.committed[index]
            if not one_server_apart(previous, current):
                raise ConfigViolation(
                    f"committed configuration at {index} is not one server from the one "
                    f"before: {previous} -> {current}"
                )
            back = set(current.members) & set(previous.removed)
            if back:
                raise ConfigViolation(f"removed IDs {sorted(back)} are members again at {index}")
            previous = current
