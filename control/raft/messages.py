"""Messages exchanged between cores.

Every message names its sender (``frm``), its recipient (``to``) and the sender's term.
A message leaves a core only in a :class:`~control.raft.ready.Ready`, which guarantees the
state it depends on (term, vote, entries) is persisted before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.raft.types import Entry, NodeId, Snapshot


@dataclass(frozen=True, slots=True)
class RequestVote:
    """Asks for a vote. A pre-vote carries ``term`` = candidate's term + 1 and changes no state."""

    frm: NodeId
    to: NodeId
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False
    """Set by a leadership transfer target, so voters skip the check-quorum lease."""


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    frm: NodeId
    to: NodeId
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replicates ``entries``, which follow the entry at (``prev_index``, ``prev_term``)."""

    frm: NodeId
    to: NodeId
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """Answers AppendEntries and InstallSnapshot.

    On success ``index`` is the highest index known to match the leader's log. On rejection
    ``index`` is the rejected ``prev_index`` and (``hint_index``, ``hint_term``) is the last
    follower entry that may match, so the leader can skip a whole term per round trip.
    """

    frm: NodeId
    to: NodeId
    term: int
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Asserts leadership. ``seq`` lets ReadIndex learn which round a quorum confirmed."""

    frm: NodeId
    to: NodeId
    term: int
    commit: int
    seq: int


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    frm: NodeId
    to: NodeId
    term: int
    seq: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    frm: NodeId
    to: NodeId
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Tells a leadership transfer target to start an election at once."""

    frm: NodeId
    to: NodeId
    term: int


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)

MESSAGE_TYPES: tuple[type[Message], ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
)


def shows_durable_state(m: Message) -> bool:
    """Whether ``m`` proves its sender had durable Raft state when it sent it: a term it
    campaigned or voted in, entries it stored, or leadership. A node whose data directory
    is empty yet whose ID sent such a message once lost its data (control.joining)."""
    match m:
        case RequestVote(pre_vote=False) | AppendEntries() | Heartbeat() | InstallSnapshot():
            return True
        case RequestVoteResponse(pre_vote=False, granted=True) | TimeoutNow():
            return True
        case AppendEntriesResponse(success=True, index=index):
            return index > 0
    return False
