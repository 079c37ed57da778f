"""Errors raised across the Raft seam. Every ``str()`` is a single line."""

from __future__ import annotations

from control.raft.types import NodeId


class RaftError(Exception):
    """Base class for errors raised by this package."""


class NotLeader(RaftError):
    """The request needs the leader. ``leader`` is the leader this node knows of, if any."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader; known leader: {leader}")
        self.leader = leader


class RequestDropped(RaftError):
    """The leader refused a proposal or read: a limit was hit or a transfer is in progress."""


class StorageError(RaftError):
    """Durable storage cannot be used. The message names the path involved."""


class DataDirError(StorageError):
    """The data directory is missing, not a directory, unreadable or locked."""


class CorruptRecordError(StorageError):
    """A checksummed record failed verification somewhere other than a torn tail."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
