"""The leader's view of one follower's replication."""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    """Where the logs match is unknown: one AppendEntries in flight at a time."""
    REPLICATE = "replicate"
    """The logs match up to ``match``: entries are streamed optimistically."""
    SNAPSHOT = "snapshot"
    """An InstallSnapshot is in flight; nothing else is sent until it is answered."""


class Progress:
    """Invariant: ``match < next``. ``match`` only grows within a term, unless the follower
    proves it lost entries it acknowledged (see :meth:`on_reject`)."""

    __slots__ = (
        "acked_seq",
        "idle_ticks",
        "inflight",
        "match",
        "next",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = True
        self.acked_seq = 0
        self.idle_ticks = 0
        self.inflight: deque[int] = deque()
        """Last index of each unanswered AppendEntries sent while replicating."""

    def sent(self, last: int) -> None:
        """Records an AppendEntries streamed in REPLICATE state."""
        self.next = last + 1
        self.idle_ticks = 0
        self.inflight.append(last)

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.idle_ticks = 0
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.next = index + 1
        self.idle_ticks = 0
        self.inflight.clear()

    def on_match(self, index: int) -> bool:
        """Records a successful response; False if it is stale."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        self.state = ProgressState.REPLICATE
        self.idle_ticks = 0
        return True

    def on_reject(self, rejected: int, probe_hint: int) -> bool:
        """Moves ``next`` back after a rejected AppendEntries; False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            return True
        if self.state is ProgressState.SNAPSHOT or rejected != self.next - 1:
            return False
        if rejected <= self.match:
            # The probe at `match` is refused: the follower no longer holds what it
            # acknowledged (its data was lost). Probing at match + 1 again would be refused
            # forever, at network speed; forget the match and back off by the hint instead,
            # down to a snapshot if need be. A lower match only makes commits wait longer.
            self.match = 0
        self.next = max(min(rejected, probe_hint + 1), self.match + 1)
        self.probe_sent = False
        return True


def quorum_value(values: list[int], quorum: int) -> int:
    """The largest value that at least ``quorum`` of ``values`` reach."""
    values.sort(reverse=True)
    return values[quorum - 1]
