"""Raft consensus core, storage and simulator for the Ringleader control plane.

The public seam is re-exported here; see README.md in this package for the contract.
"""

from control.raft.config import TICK_SECONDS, RaftConfig
from control.raft.core import RaftCore
from control.raft.diskstore import DiskStorage
from control.raft.errors import (
    CorruptRecordError,
    DataDirError,
    NotLeader,
    RaftError,
    RequestDropped,
    StorageError,
)
from control.raft.memstore import MemoryStorage
from control.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from control.raft.ready import Compaction, Ready
from control.raft.storage import (
    LogStore,
    SnapshotStore,
    StableStore,
    Storage,
    load_state,
    persist_compaction,
    persist_ready,
)
from control.raft.types import (
    Entry,
    EntryKind,
    HardState,
    NodeId,
    PersistentState,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

__all__ = [
    "TICK_SECONDS",
    "AppendEntries",
    "AppendEntriesResponse",
    "Compaction",
    "CorruptRecordError",
    "DataDirError",
    "DiskStorage",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "LogStore",
    "MemoryStorage",
    "Message",
    "NodeId",
    "NotLeader",
    "PersistentState",
    "RaftConfig",
    "RaftCore",
    "RaftError",
    "ReadState",
    "Ready",
    "RequestDropped",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SnapshotStore",
    "SoftState",
    "StableStore",
    "Storage",
    "StorageError",
    "TimeoutNow",
    "load_state",
    "persist_compaction",
    "persist_ready",
]
