"""The cluster's configuration: voters and learners with their URLs, and every ID ever
removed; its versioned encoding; and the rule that one change moves one server.

A configuration travels in the log as the data of an ``EntryKind.CONFIG`` entry and in a
snapshot's metadata. Each entry holds the whole configuration, not a delta, so a node
learns it from its newest configuration entry alone (hashicorp/raft stores it the same
way). Changes are single-server (Raft dissertation §4.1): any two majorities of
configurations that differ by one server overlap, so no joint consensus is needed.

Format version 1: JSON ``{"v": 1, "voters": {"ID": URL}, "learners": {"ID": URL},
"removed": [ID, ...]}``. Decoders refuse other versions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

VERSION = 1


class MembershipError(ValueError):
    """A configuration change that is not allowed, or an undecodable configuration."""


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters count for elections and commit; learners receive the log and do neither.

    Invariants: an ID is a voter, a learner, or neither; no removed ID is a member.
    """

    voters: Mapping[int, str] = field(default_factory=dict)
    learners: Mapping[int, str] = field(default_factory=dict)
    removed: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        both = set(self.voters) & set(self.learners)
        if both:
            raise MembershipError(f"IDs {sorted(both)} are both voter and learner")
        back = self.removed & (set(self.voters) | set(self.learners))
        if back:
            raise MembershipError(f"removed IDs {sorted(back)} are members")
        if any(i <= 0 for i in (*self.voters, *self.learners, *self.removed)):
            raise MembershipError("node IDs must be positive")

    @classmethod
    def of_voters(cls, voters: Mapping[int, str]) -> Membership:
        return cls(dict(voters))

    @property
    def members(self) -> dict[int, str]:
        """Every voter and learner, with its URL."""
        return {**self.voters, **self.learners}

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def role_of(self, node_id: int) -> str | None:
        """ "voter", "learner", "removed" or None."""
        if node_id in self.voters:
            return "voter"
        if node_id in self.learners:
            return "learner"
        return "removed" if node_id in self.removed else None

    # -- the three changes: each returns the new configuration or raises MembershipError --

    def add_learner(self, node_id: int, url: str) -> Membership:
        if node_id in self.removed:
            raise MembershipError(f"node {node_id} was removed and can never rejoin; use a new ID")
        known = self.members.get(node_id)
        if known is not None:
            raise MembershipError(f"node {node_id} is already a member ({known})")
        if url in self.members.values():
            raise MembershipError(f"{url} is already the URL of another member")
        return Membership(self.voters, {**self.learners, node_id: url}, self.removed)

    def promote(self, node_id: int) -> Membership:
        if node_id not in self.learners:
            raise MembershipError(f"node {node_id} is not a learner")
        learners = {i: u for i, u in self.learners.items() if i != node_id}
        return Membership({**self.voters, node_id: self.learners[node_id]}, learners, self.removed)

    def remove(self, node_id: int) -> Membership:
        if node_id not in self.members:
            raise MembershipError(f"node {node_id} is not a member")
        if set(self.voters) == {node_id}:
            raise MembershipError(f"node {node_id} is the last voter")
        return Membership(
            {i: u for i, u in self.voters.items() if i != node_id},
            {i: u for i, u in self.learners.items() if i != node_id},
            self.removed | {node_id},
        )

    # -- encoding --------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        return {
            "v": VERSION,
            "voters": {str(i): u for i, u in sorted(self.voters.items())},
            "learners": {str(i): u for i, u in sorted(self.learners.items())},
            "removed": sorted(self.removed),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: object) -> Membership:
        if not isinstance(value, dict) or value.get("v") != VERSION:
            raise MembershipError(f"not a version {VERSION} configuration: {value!r}"[:200])
        removed = value.get("removed")
        if not isinstance(removed, list) or not all(type(i) is int for i in removed):
            raise MembershipError("configuration: removed must be a list of IDs")
        return cls(_members(value, "voters"), _members(value, "learners"), frozenset(removed))

    @classmethod
    def from_bytes(cls, data: bytes) -> Membership:
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MembershipError(f"configuration is not JSON: {exc}") from None
        return cls.from_json(value)


def _members(value: dict[str, object], key: str) -> dict[int, str]:
    raw = value.get(key)
    if not isinstance(raw, dict):
        raise MembershipError(f"configuration: {key} must be an object")
    out: dict[int, str] = {}
    for ident, url in raw.items():
        if not isinstance(ident, str) or not ident.isdigit() or not isinstance(url, str):
            raise MembershipError(f"configuration: bad {key} entry {ident!r}: {url!r}")
        out[int(ident)] = url
    return out


def one_server_apart(old: Membership, new: Membership) -> bool:
    """Whether ``new`` adds, promotes or removes exactly one server of ``old``, and forgets
    no removed ID: the only changes a leader makes (dissertation §4.1)."""
    if not old.removed <= new.removed:
        return False
    changed = {
        i
        for i in set(old.members) | set(new.members)
        if old.role_of(i) != new.role_of(i) or old.members.get(i) != new.members.get(i)
    }
    departed = set(old.members) - set(new.members)
    return len(changed) == 1 and new.removed - old.removed == departed
