"""Safety and liveness checkers for the simulator, kept apart from the code they check.

They see the cluster only through :class:`NodeView` (what a node reports) and through the
events the simulator feeds them; they never call into a core's internals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.raft.types import Entry, NodeId, Role


class Violation(Exception):
    """An invariant failed. ``str()`` names the invariant and what broke it."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the checkers may know about a running node after a step."""

    id: NodeId
    incarnation: int
    term: int
    role: Role
    commit: int
    applied: int
    first_index: int
    term_at: Callable[[int], int | None]


@dataclass(frozen=True, slots=True)
class DurableLog:
    """What one node (running or crashed) holds durably."""

    id: NodeId
    last_index: int
    last_term: int
    snapshot_index: int
    term_at: Callable[[int], int | None]

    def holds(self, index: int, term: int) -> bool:
        return index <= self.snapshot_index or self.term_at(index) == term

    def could_win_vote_of(self, voter: DurableLog) -> bool:
        """Whether ``voter`` would judge this log at least as up to date as its own."""
        return self.last_term > voter.last_term or (
            self.last_term == voter.last_term and self.last_index >= voter.last_index
        )


def chain_digest(prev: bytes, entry: Entry) -> bytes:
    """The state machine digest after applying ``entry`` on top of ``prev``."""
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(entry.index.to_bytes(8, "big"))
    h.update(entry.data)
    return h.digest()


class SafetyChecker:
    """Checks the Raft safety properties incrementally, so every step stays cheap.

    - Election safety: at most one leader per term.
    - Log matching: two persisted entries with the same index and term carry the same data
      and follow entries of the same term, which by induction makes the logs identical.
    - Leader completeness: a new leader's log holds every entry committed in an earlier term,
      when an entry is first committed no node lacking it could collect a quorum of votes.
    - Commit stability: no node replaces an entry at or below its own durable commit.
    - State machine safety: every node applies a prefix of one history; snapshots match it.
    - Acknowledged proposals are durable on a quorum when acknowledged and never lost.
    - Linearizable reads: a read index covers every proposal acknowledged before the read.
    - Commit and applied indexes never go backwards within an incarnation, and the durable
      commit index never goes backwards at all.
    """

    def __init__(self, quorum: int) -> None:
        self._quorum = quorum
        self._history: list[Entry | None] = [None]
        self._digests: list[bytes] = [b""]
        self._committed_terms: dict[int, int] = {}
        self._commit_seen_in_term: dict[int, int] = {}
        """Per committed index, the lowest term in which a node reported it committed: an
        upper bound on the term that committed it."""
        self._leaders: dict[int, NodeId] = {}
        self._seen_leaders: set[tuple[NodeId, int]] = set()
        self._entry_ids: dict[tuple[int, int], tuple[Entry, int | None]] = {}
        self._last: dict[NodeId, tuple[int, int, int]] = {}
        self._durable_commit: dict[NodeId, int] = {}
        self.acked: dict[int, Entry] = {}

    @property
    def quorum(self) -> int:
        return self._quorum

    @property
    def max_acked(self) -> int:
        return max(self.acked, default=0)

    # ----------------------------------------------------------------- events

    def on_persist(self, node: NodeId, entries: Sequence[Entry], prev_term: int | None) -> None:
        """``entries`` were made durable; ``prev_term`` is the stored term before the first.
        Call it before :meth:`on_durable_commit` for the same Ready."""
        own_commit = self._durable_commit.get(node, 0)
        for entry in entries:
            committed = self._committed_terms.get(entry.index, entry.term)
            if entry.index <= own_commit and committed != entry.term:
                raise Violation(
                    "commit stability",
                    f"node {node} replaced its committed entry {entry.index}@{committed} "
                    f"with term {entry.term}",
                )
            key = (entry.index, entry.term)
            known = self._entry_ids.get(key)
            if known is None:
                self._entry_ids[key] = (entry, prev_term)
            else:
                first, first_prev = known
                if first != entry:
                    raise Violation("log matching", f"node {node} holds another entry at {key}")
                if first_prev is None:
                    self._entry_ids[key] = (first, prev_term)
                elif prev_term is not None and prev_term != first_prev:
                    raise Violation(
                        "log matching",
                        f"node {node} has {key} after term {prev_term}, another after {first_prev}",
                    )
            prev_term = entry.term

    def on_apply(self, node: NodeId, entry: Entry) -> None:
        index = entry.index
        if index < len(self._history):
            known = self._history[index]
            if known != entry:
                raise Violation(
                    "state machine safety",
                    f"node {node} applied {index}@{entry.term}, history has {known}",
                )
        elif index == len(self._history):
            self._history.append(entry)
            self._digests.append(chain_digest(self._digests[-1], entry))
        else:
            raise Violation(
                "state machine safety",
                f"node {node} applied {index} beyond history end {len(self._history) - 1}",
            )

    def on_restore(self, node: NodeId, index: int, digest: bytes) -> None:
        if index >= len(self._digests) or self._digests[index] != digest:
            raise Violation(
                "state machine safety",
                f"node {node} restored a snapshot at {index} that matches no applied history",
            )

    def on_ack(self, entry: Entry, durable_copies: int) -> None:
        """A proposal was acknowledged to its client, held durably by ``durable_copies``."""
        if durable_copies < self._quorum:
            raise Violation(
                "durable acknowledgement",
                f"entry {entry.index}@{entry.term} acknowledged with {durable_copies} "
                f"durable copies, quorum is {self._quorum}",
            )
        self.acked[entry.index] = entry

    def check_acked_durable(self, copies: Callable[[Entry], int]) -> None:
        """Every acknowledged entry is still held durably by a quorum."""
        for entry in self.acked.values():
            n = copies(entry)
            if n < self._quorum:
                raise Violation(
                    "acknowledged proposal lost",
                    f"entry {entry.index}@{entry.term} has {n} durable copies",
                )

    def on_read(self, node: NodeId, index: int, required: int) -> None:
        if index < required:
            raise Violation(
                "linearizable read",
                f"node {node} answered a read at {index}; {required} was acknowledged first",
            )

    def on_durable_commit(self, node: NodeId, commit: int) -> None:
        last = self._durable_commit.get(node, 0)
        if commit < last:
            raise Violation("durable commit", f"node {node} stored commit {commit} after {last}")
        self._durable_commit[node] = commit

    def after_step(
        self, views: Sequence[NodeView], durable: Callable[[], Sequence[DurableLog]]
    ) -> None:
        """Checks the running nodes; ``durable`` gives every node's durable log on demand."""
        for v in views:
            self._check_monotonic(v)
            self._observe_commit(v, durable)
            if v.role is Role.LEADER:
                self._check_leader(v)

    # ----------------------------------------------------------------- checks

    def _check_monotonic(self, v: NodeView) -> None:
        last = self._last.get(v.id)
        if (
            last is not None
            and last[0] == v.incarnation
            and (v.commit < last[1] or v.applied < last[2])
        ):
            raise Violation(
                "monotonic indexes",
                f"node {v.id} commit {last[1]}->{v.commit}, applied {last[2]}->{v.applied}",
            )

    def _observe_commit(self, v: NodeView, durable: Callable[[], Sequence[DurableLog]]) -> None:
        last = self._last.get(v.id)
        seen = last[1] if last is not None and last[0] == v.incarnation else 0
        terms = self._committed_terms
        logs: Sequence[DurableLog] | None = None
        for index in range(max(seen, v.first_index - 1) + 1, v.commit + 1):
            term = v.term_at(index)
            if term is None:
                raise Violation("log", f"node {v.id} committed {index} it does not hold")
            known = terms.get(index)
            seen_in = self._commit_seen_in_term
            seen_in[index] = min(seen_in.get(index, v.term), v.term)
            if known is None:
                terms[index] = term
                logs = logs if logs is not None else durable()
                self._check_electable(index, term, logs)
            elif known != term:
                raise Violation(
                    "state machine safety",
                    f"node {v.id} committed {index}@{term}, already committed at term {known}",
                )
        self._last[v.id] = (v.incarnation, v.commit, v.applied)

    def _check_electable(self, index: int, term: int, logs: Sequence[DurableLog]) -> None:
        """A node lacking a committed entry must be unable to win an election (Raft §5.4.3);
        this is the hazard of committing an earlier term's entry by counting (Figure 8)."""
        for c in logs:
            if c.holds(index, term):
                continue
            votes = sum(c.could_win_vote_of(v) for v in logs)
            if votes >= self._quorum:
                raise Violation(
                    "leader completeness",
                    f"node {c.id} lacks committed entry {index}@{term} yet could win {votes} votes",
                )

    def _check_leader(self, v: NodeView) -> None:
        holder = self._leaders.setdefault(v.term, v.id)
        if holder != v.id:
            raise Violation("election safety", f"nodes {holder} and {v.id} lead term {v.term}")
        if (v.id, v.term) in self._seen_leaders:
            return
        self._seen_leaders.add((v.id, v.term))
        seen_in = self._commit_seen_in_term
        for index, term in self._committed_terms.items():
            if index >= v.first_index and seen_in[index] < v.term and v.term_at(index) != term:
                raise Violation(
                    "leader completeness",
                    f"leader {v.id} of term {v.term} lacks committed entry {index}@{term}",
                )
