"""The control plane's metrics (one process per node, so plain prometheus_client)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# `_created` series double the exposition and no dashboard or alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

# fsync and apply run from ~50 us (tmpfs) to tens of ms (a busy disk).
DISK_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
)  # fmt: skip

# A tick is due every 20 ms; an election timeout is 200-400 ms.
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0, 2.5)


class CounterChildren:
    """`family.labels(*values)`, each child looked up once: prometheus_client's lookup takes
    a lock and hashes the values, a cost paid on every request or report otherwise."""

    def __init__(self, family: Counter) -> None:
        self._family = family
        self._children: dict[tuple[str, ...], Counter] = {}

    def labels(self, *values: str) -> Counter:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._family.labels(*values)
        return child


class ControlMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.term = Gauge("ringleader_raft_term", "Current Raft term.", registry=r)
        self.is_leader = Gauge(
            "ringleader_raft_leader", "1 if this node is the Raft leader, else 0.", registry=r
        )
        self.has_leader = Gauge(
            "ringleader_raft_has_leader", "1 if this node knows a leader, else 0.", registry=r
        )
        self.commit_index = Gauge(
            "ringleader_raft_commit_index", "Highest log index known committed.", registry=r
        )
        self.applied_index = Gauge(
            "ringleader_raft_applied_index", "Highest log index applied.", registry=r
        )
        self.members = Gauge(
            "ringleader_control_members",
            "Control nodes in the configuration this node uses, by role (voter, learner).",
            ["role"],
            registry=r,
        )
        self.leader_changes = Counter(
            "ringleader_raft_leader_changes_total",
            "Times this node saw the leader change (including to none).",
            registry=r,
        )
        self.proposals_failed = Counter(
            "ringleader_raft_proposals_failed_total",
            "Proposals that failed: not leader, dropped, lost leadership or timed out.",
            ["reason"],
            registry=r,
        )
        self.fsync_duration = Histogram(
            "ringleader_raft_fsync_duration_seconds",
            "Time to persist one Ready (entries, hard state, snapshot) with fsync.",
            buckets=DISK_BUCKETS,
            registry=r,
        )
        self.apply_duration = Histogram(
            "ringleader_raft_apply_duration_seconds",
            "Time to apply one batch of committed entries to the registry.",
            buckets=DISK_BUCKETS,
            registry=r,
        )
        self.peer_rpc_rejected = Counter(
            "ringleader_raft_peer_rpc_rejected_total",
            "Peer RPC requests refused, by reason (token, malformed).",
            ["reason"],
            registry=r,
        )
        self.peer_send_failures = Counter(
            "ringleader_raft_peer_send_failures_total",
            "Peer streams that broke or were refused, and batches dropped for want of a stream.",
            ["peer"],
            registry=r,
        )
        self.disk_stalled = Gauge(
            "ringleader_control_disk_stalled",
            "1 while a storage write has been in flight past --disk-stall-timeout, else 0.",
            registry=r,
        )
        self.disk_stalls = Counter(
            "ringleader_control_disk_stalls_total",
            "Storage writes that outlasted --disk-stall-timeout.",
            registry=r,
        )
        self.tick_lateness = Histogram(
            "ringleader_control_tick_lateness_seconds",
            "How late each Raft tick ran: how long the event loop stood still before it. "
            "Past the election timeout (0.2 s) on a leader, followers hold an election.",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "ringleader_control_api_requests_total",
            "Control API requests by route template and status code.",
            ["route", "code"],
            registry=r,
        )
        self.watchers = Gauge(
            "ringleader_control_watchers", "Ring watch long-polls waiting now.", registry=r
        )
        self.detector_reports = Counter(
            "ringleader_detector_reports_total",
            "Health reports received from proxies, by pool.",
            ["pool"],
            registry=r,
        )
        self.detector_reporters = Gauge(
            "ringleader_detector_reporting_proxies",
            "Proxies whose reports are recent enough to count toward a quorum, by pool.",
            ["pool"],
            registry=r,
        )
        self.detector_decisions = Counter(
            "ringleader_detector_decisions_total",
            "Failure detector outcomes by pool and decision "
            "(mark_down, mark_up, held_by_cap, flush_failed).",
            ["pool", "decision"],
            registry=r,
        )
        self.unauthorized = Counter(
            "ringleader_control_unauthorized_total",
            "State-changing API calls refused for a missing or wrong token.",
            registry=r,
        )
