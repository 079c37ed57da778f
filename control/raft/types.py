"""Value types shared by the core, the storage, the codec and the simulator."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from control.raft.membership import Membership

NodeId = int
"""A voter's identity. Ids are positive and unique within a cluster."""


class EntryKind(enum.IntEnum):
    """What an entry carries. The values are part of the wire and disk formats."""

    NORMAL = 0
    """An application command: ``data`` is handed to the state machine."""
    NOOP = 1
    """The empty entry a new leader appends so it can commit in its own term."""
    CONFIG = 2
    """A new cluster configuration: ``data`` is an encoded
    :class:`~control.raft.membership.Membership`."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``term`` is the leader's term when appended."""

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state machine image covering every entry up to and including ``index``."""

    index: int
    term: int
    data: bytes
    membership: Membership | None = None
    """The configuration in force at ``index``; None in a snapshot written before
    membership changes existed, which means the bootstrap (``--peers``) configuration."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state, reported for metrics and so the driver can fail reads on step-down."""

    role: Role
    leader: NodeId | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A confirmed ReadIndex: once ``index`` is applied, a read for ``ctx`` is linearizable."""

    ctx: bytes
    index: int


@dataclass(frozen=True, slots=True)
class PersistentState:
    """What a node recovers from its storage on start."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
