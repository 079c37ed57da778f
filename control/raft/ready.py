"""The batch of work a core hands its driver."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from control.raft.messages import Message
from control.raft.types import Entry, HardState, ReadState, Snapshot, SoftState


@dataclass(frozen=True, slots=True)
class Ready:
    """Work to do, in this order, before calling :meth:`RaftCore.advance`:

    1. Persist durably: ``snapshot`` (then reset the log to it), ``entries`` (replacing any
       stored entries at the same or higher indexes), then ``hard_state``.
    2. Send ``messages``. Never before step 1 completes: they promise what step 1 stores,
       unless ``messages_may_precede_persist``: a leader whose term and vote are already
       stored may replicate while its own write is in flight (Raft dissertation §10.2.1),
       because its commit index never counts its own unpersisted entries.
    3. Restore the state machine from ``snapshot`` if set, then apply ``committed_entries``
       in order (NOOP entries carry no command but still advance the applied index).
    4. Answer ``read_states`` once the state machine has applied their ``index``.

    ``soft_state`` is the current role, leader and term; when the role is no longer leader,
    reads and proposals this node accepted as leader may never complete and should fail.
    """

    soft_state: SoftState
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    messages_may_precede_persist: bool = False

    @property
    def persists(self) -> bool:
        """Whether step 1 writes anything."""
        return self.snapshot is not None or bool(self.entries) or self.hard_state is not None


@dataclass(frozen=True, slots=True)
class Compaction:
    """A local snapshot: persist ``snapshot``, then drop stored entries up to ``log_through``."""

    snapshot: Snapshot
    log_through: int


def without_commit_only_hard_state(rd: Ready, stored: HardState) -> Ready:
    """`rd` without a hard state that differs from `stored` only in commit.

    Raft needs term and vote durable before replying, but not the commit index: a restarted
    node relearns it from the leader, and every committed entry is on a majority of logs
    anyway. Skipping those writes saves two fsyncs per write (etcd does the same). The
    driver (control/node.py) and the simulator's model of it (simnode.py) both use this.
    """
    hs = rd.hard_state
    if hs is not None and (hs.term, hs.vote) == (stored.term, stored.vote):
        return dataclasses.replace(rd, hard_state=None)
    return rd
