"""The membership API's logic: the members view, and the add and remove changes as
functions of the configuration in use (for RaftNode.change_membership).

A change that is already in effect returns None, so a retried request (the same
X-Request-Id, or the same command run again) succeeds without a second change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from control.raft.membership import Membership, MembershipError
from control.raft.types import NodeId
from control.transport import PeerAddress

Change = Callable[[Membership], Membership | None]


def parse_member(body: Mapping[str, Any]) -> tuple[NodeId, str]:
    """`{"id": ID, "url": URL}`; MembershipError naming what is wrong."""
    node_id, url = body.get("id"), body.get("url")
    if type(node_id) is not int or node_id <= 0:
        raise MembershipError("id must be a positive whole number")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise MembershipError(f"url must be an http:// or https:// URL, got {url!r}")
    try:
        PeerAddress.parse(url)
    except ValueError as exc:
        raise MembershipError(f"url: {exc}") from None
    return node_id, url.rstrip("/")


def add(node_id: NodeId, url: str) -> Change:
    def change(m: Membership) -> Membership | None:
        if m.members.get(node_id) == url:
            return None
        return m.add_learner(node_id, url)

    return change


def remove(node_id: NodeId) -> Change:
    def change(m: Membership) -> Membership | None:
        if node_id in m.removed:
            return None
        return m.remove(node_id)

    return change


def members_view(
    membership: Membership,
    index: int,
    self_id: NodeId,
    matches: Mapping[NodeId, int],
    reachable: Callable[[NodeId], bool],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """`GET /v1/members`: each member's ID, URL, role, match index (from the leader, null
    elsewhere) and whether this node's stream to it is open."""
    members = [
        {
            "id": node_id,
            "url": url,
            "role": membership.role_of(node_id),
            "match": matches.get(node_id),
            "reachable": node_id == self_id or reachable(node_id),
        }
        for node_id, url in sorted(membership.members.items())
    ]
    return {
        "index": index, "configuration": membership.to_json(), "members": members,
        "removed": sorted(membership.removed), **extra,
    }  # fmt: skip
