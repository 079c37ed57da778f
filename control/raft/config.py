"""Tunables of one core. Times are in ticks; the driver decides how long a tick is."""

from __future__ import annotations

from dataclasses import dataclass

from control.raft.membership import Membership
from control.raft.types import NodeId

TICK_SECONDS = 0.020
"""The tick length the control service drives cores with."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Configuration of one core.

    ``peers`` lists the bootstrap voters, this node included, and ``peer_urls`` their URLs
    (optional: the core only carries them in the configuration). The bootstrap
    configuration counts until the log or a snapshot holds one (control.raft.membership).
    Empty ``peers`` means the node joins a running cluster: it has no configuration, so it
    neither votes nor campaigns, until the leader's log or snapshot brings one. Election
    timeouts are drawn uniformly from ``[election_ticks_min, election_ticks_max)``;
    check-quorum runs every ``election_ticks_min`` ticks on the leader, which is also the
    follower lease during which votes are refused while a leader is known.
    """

    node_id: NodeId
    peers: tuple[NodeId, ...]
    peer_urls: tuple[tuple[NodeId, str], ...] = ()
    heartbeat_ticks: int = 2
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 64
    max_inflight_msgs: int = 64
    """AppendEntries messages streamed to one follower before an answer is needed."""
    max_committed_per_ready: int = 1024
    max_uncommitted_entries: int = 4096
    max_pending_reads: int = 4096
    snapshot_threshold: int = 1024
    """Applied entries beyond the last snapshot that make :attr:`RaftCore.snapshot_due` true."""
    snapshot_trailing: int = 128
    learner_promotion_lag: int = 64
    """A learner whose match index is within this many entries of the leader's last index
    is promoted to voter (one AppendEntries batch: a promoted voter that is that close
    cannot hold up commits for long)."""
    """Entries kept in the log behind a new snapshot, so slightly late followers avoid one."""
    unsafe_commit_old_term: bool = False
    """TEST ONLY. Commits entries of earlier terms by counting replicas (Raft paper, Figure 8).
    It exists so the simulator tests can prove the checkers catch a real safety bug."""

    def __post_init__(self) -> None:
        if self.node_id <= 0 or any(p <= 0 for p in self.peers):
            raise ValueError("node ids must be positive")
        if self.peers and self.node_id not in self.peers:
            raise ValueError(f"node {self.node_id} is not among peers {self.peers}")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"duplicate peer ids in {self.peers}")
        if not 0 < self.heartbeat_ticks < self.election_ticks_min < self.election_ticks_max:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks_min < election_ticks_max")
        limits = (
            self.max_entries_per_msg,
            self.max_inflight_msgs,
            self.max_committed_per_ready,
            self.max_uncommitted_entries,
            self.max_pending_reads,
            self.snapshot_threshold,
        )
        if min(limits) <= 0 or self.snapshot_trailing < 0 or self.learner_promotion_lag < 0:
            raise ValueError(
                "limits must be positive, snapshot_trailing and learner_promotion_lag non-negative"
            )

    def bootstrap_membership(self) -> Membership:
        """The configuration from ``peers``, for a node whose log and snapshot hold none."""
        urls = dict(self.peer_urls)
        return Membership.of_voters({p: urls.get(p, "") for p in self.peers})
