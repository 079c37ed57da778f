"""Start-up checks of a node's ID against the running cluster, before it takes part.

Raft assumes a server never forgets what it stored: a node whose data directory was
emptied could vote a second time in a term it already voted in, or count toward a commit
with entries it no longer holds (issue 16, finding 4). Such a node is replaced under a
new ID instead: `ringleader member remove OLD`, then a new node with `--join` and
`ringleader member add NEW=URL` (docs/runbook.md, "Replacing a control node").

- `--join` with an empty data directory: the cluster must answer; the ID must not be a
  voter already, nor one ever removed. It starts with no configuration (it neither votes
  nor campaigns) and streams to the members the cluster named, until the leader's log
  brings the configuration.
- `--peers` with an empty data directory: a brand-new cluster, unless a peer that answers
  has seen this ID with durable state (a vote, stored entries, leadership) since it
  started, or it was removed: then its data was lost and it must not start. Peers not
  answering means a cluster starting up: every node of a new cluster starts empty, and
  one started late never voted. What peers saw before their own restart is not known,
  so the check is as good as the peers' memory; the runbook procedure is the safe one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from control.raft.membership import Membership, MembershipError
from control.raft.storage import Storage
from control.raft.types import HardState, NodeId
from ringleader.settings import ConfigError

log = logging.getLogger("ringleader.control")

MEMBERS_PATH = "/v1/members"
ASK_TIMEOUT = 2.0
RUNBOOK = 'docs/runbook.md, "Replacing a control node"'


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What one member said: the configuration it uses and its log index."""

    url: str
    membership: Membership
    index: int
    with_state: frozenset[NodeId]


def ask(urls: list[str]) -> list[ClusterView]:
    """Each member's answer to `GET /v1/members?stale=1`; members that do not answer, or
    answer with something else, are left out."""
    views = []
    with httpx.Client(timeout=ASK_TIMEOUT) as http:
        for url in urls:
            try:
                r = http.get(url + MEMBERS_PATH, params={"stale": "1"})
                body = r.json() if r.status_code == 200 else None
                if not isinstance(body, dict):
                    continue
                views.append(
                    ClusterView(
                        url,
                        Membership.from_json(body["configuration"]),
                        int(body["index"]),
                        frozenset(int(i) for i in body.get("with_state", ())),
                    )
                )
            except (httpx.HTTPError, ValueError, KeyError, TypeError, MembershipError) as exc:
                log.warning("no configuration from %s: %s", url, exc)
    return views


def is_empty(storage: Storage) -> bool:
    return (
        storage.load_snapshot() is None
        and not storage.load_entries()
        and storage.load_hard_state() == HardState()
    )


def check_join(node_id: NodeId, urls: list[str], storage: Storage) -> dict[NodeId, str]:
    """The members to stream to at start; ConfigError if this node must not start."""
    empty = is_empty(storage)
    views = ask(urls)
    if not views:
        if empty:
            raise ConfigError(f"--join: no member answered at {', '.join(urls)}")
        return {}
    _refuse_removed(node_id, views)
    newest = max(views, key=lambda v: v.index).membership
    if empty and any(node_id in v.membership.voters for v in views):
        raise ConfigError(
            f"--join: node {node_id} is a voter of the cluster, and this data directory is "
            f"empty: a node that lost its data must be replaced under a new ID ({RUNBOOK})"
        )
    return dict(newest.members)


def check_bootstrap(node_id: NodeId, peers: dict[NodeId, str], storage: Storage) -> None:
    """ConfigError if this `--peers` node has an empty data directory but the cluster
    knows its ID had data (or removed it)."""
    if not is_empty(storage):
        return
    views = ask([url for i, url in sorted(peers.items()) if i != node_id])
    _refuse_removed(node_id, views)
    seen = [v.url for v in views if node_id in v.with_state]
    if seen:
        raise ConfigError(
            f"node {node_id}: this data directory is empty, but {seen[0]} saw node "
            f"{node_id} with Raft state: its data was lost, and it must not vote again. "
            f"Remove it (ringleader member remove {node_id}) and start a node under a new "
            f"ID with --join ({RUNBOOK})"
        )


def _refuse_removed(node_id: NodeId, views: list[ClusterView]) -> None:
    for v in views:
        if node_id in v.membership.removed:
            raise ConfigError(
                f"node {node_id} was removed from the cluster ({v.url}) and its ID can never "
                f"rejoin; start the node under a new ID ({RUNBOOK})"
            )
