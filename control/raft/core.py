"""The deterministic Raft core: no clock, no I/O, randomness only from the injected RNG.

Inputs are :meth:`RaftCore.tick`, :meth:`RaftCore.step`, :meth:`RaftCore.propose`,
:meth:`RaftCore.read_index`, :meth:`RaftCore.transfer_leadership` and
:meth:`RaftCore.set_storage_stalled`; every effect is returned in a
:class:`~control.raft.ready.Ready` batch.
"""

from __future__ import annotations

import random
from collections import deque

from control.raft.config import RaftConfig
from control.raft.configlog import ConfigLog
from control.raft.errors import NotLeader, RequestDropped
from control.raft.log import RaftLog
from control.raft.membership import Membership, MembershipError, one_server_apart
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
from control.raft.progress import Progress, ProgressState, quorum_value
from control.raft.ready import Compaction, Ready
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


class RaftCore:
    """One Raft participant.

    Invariants: ``commit`` never decreases and never exceeds the last log index; entries at
    or below ``commit`` are never truncated; ``term`` never decreases and at most one vote
    is cast per term; a leader counts replicas toward commit only for entries of its own
    term, so its first commit is the NOOP it appends on election.
    """

    def __init__(
        self, config: RaftConfig, rng: random.Random, state: PersistentState | None = None
    ) -> None:
        """Builds a core from recovered durable state (empty on first boot)."""
        state = state or PersistentState()
        self.config = config
        self.id = config.node_id
        self._rng = rng
        self._log = RaftLog(state.snapshot, state.entries)
        snap = state.snapshot
        self._configs = ConfigLog(
            snap.membership if snap and snap.membership else config.bootstrap_membership(),
            self._log.snapshot_index,
            self._log.slice(self._log.base + 1, self._log.last_index + 1),
        )
        self._membership = Membership()
        self._voters: frozenset[NodeId] = frozenset()
        self._others: tuple[NodeId, ...] = ()
        self._quorum = 1
        # Leader only: members a committed-or-appended change removed, still sent the
        # commit for a while so they learn of their removal: {id: (removal index, ticks)}.
        self._departing: dict[NodeId, tuple[int, int]] = {}
        hs = state.hard_state
        self._term = hs.term
        self._vote = hs.vote
        self._commit = max(hs.commit, self._log.snapshot_index)
        if self._commit > self._log.last_index:
            raise ValueError(f"commit {self._commit} beyond last index {self._log.last_index}")
        self._persisted = HardState(self._term, self._vote, self._commit)
        self._stored_term_vote = (self._term, self._vote)
        self._applied = self._log.snapshot_index
        self._applying = self._applied
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._election_timeout = self._random_timeout()
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._transferee: NodeId | None = None
        self._hb_seq = 0
        self._pending_reads: deque[tuple[int, ReadState]] = deque()
        self._reads_awaiting_commit: list[bytes] = []
        self._outbox: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_snapshot: Snapshot | None = None
        self._reported_soft = self.soft_state
        self._ready_outstanding = False
        self._storage_stalled = False
        self._apply_membership()

    # ----------------------------------------------------------------- read-only view

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> NodeId | None:
        return self._vote

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def applied_index(self) -> int:
        """The last index the driver confirmed applied through :meth:`advance`."""
        return self._applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def first_index(self) -> int:
        """The first index still held in the log; lower ones are only in the snapshot."""
        return self._log.base + 1

    @property
    def snapshot(self) -> Snapshot | None:
        return self._log.snapshot

    @property
    def soft_state(self) -> SoftState:
        return SoftState(self._role, self._leader, self._term)

    @property
    def storage_stalled(self) -> bool:
        return self._storage_stalled

    def match_indexes(self) -> dict[NodeId, int]:
        """A leader's view of how far each voting follower's log matches its own; empty
        otherwise."""
        return {peer: pr.match for peer, pr in self._progress.items() if peer in self._voters}

    def member_matches(self) -> dict[NodeId, int]:
        """A leader's view of how far each member's log (learners too) matches its own."""
        members = self._membership.members
        return {peer: pr.match for peer, pr in self._progress.items() if peer in members}

    @property
    def membership(self) -> Membership:
        """The newest configuration in this node's log, committed or not: the one it uses."""
        return self._membership

    @property
    def membership_index(self) -> int:
        """The log index of :attr:`membership` (its snapshot's index if it came with one)."""
        return self._configs.current_index

    @property
    def removed(self) -> bool:
        """Whether a committed configuration removed this node: it must stop for good."""
        return self.id in self._configs.at(self._commit).removed

    @property
    def snapshot_due(self) -> bool:
        """Whether enough entries were applied since the last snapshot to take a new one."""
        return self._applied - self._log.snapshot_index >= self.config.snapshot_threshold

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, or None if compacted or beyond the log."""
        return self._log.term_at(index)

    def entries(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with ``lo <= index < hi``; ``lo`` must be at least :attr:`first_index`."""
        return self._log.slice(lo, hi)

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advances logical time by one tick."""
        if self._role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if (
            self._election_elapsed >= self._election_timeout
            and not self._storage_stalled
            and self.id in self._voters
        ):
            self._campaign(pre_vote=self.config.pre_vote)

    def step(self, m: Message) -> None:
        """Feeds one message from a peer. Stale, duplicated and reordered messages are safe."""
        # Messages from outside the configuration count too (dissertation §4.1): a voter
        # whose newer configuration this node lacks must still get its vote. Removed
        # servers cannot disrupt: pre-vote and the leader lease hold them off (§4.2.3).
        if m.to != self.id or m.frm == self.id:
            return
        if m.term > self._term:
            if isinstance(m, RequestVote):
                if not m.transfer and self._in_lease():
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, None)
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                pass
            elif isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
        elif m.term < self._term:
            if isinstance(m, AppendEntries | Heartbeat):
                # Tell a stale leader about the newer term, so a node that raised its term
                # while partitioned is not left unable to hear from anyone.
                self._send(AppendEntriesResponse(self.id, m.frm, self._term, False, 0))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(RequestVoteResponse(self.id, m.frm, self._term, False, True))
            return
        match m:
            case RequestVote():
                self._on_request_vote(m)
            case RequestVoteResponse():
                self._on_vote_response(m)
            case AppendEntries():
                self._on_append(m)
            case AppendEntriesResponse():
                self._on_append_response(m)
            case Heartbeat():
                self._on_heartbeat(m)
            case HeartbeatResponse():
                self._on_heartbeat_response(m)
            case InstallSnapshot():
                self._on_install_snapshot(m)
            case TimeoutNow():
                self._on_timeout_now()

    def propose(self, data: bytes) -> int:
        """Appends a command; returns its index. It is committed once it appears in
        ``committed_entries`` at that index with this node's current term."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transferee is not None:
            raise RequestDropped(f"leadership transfer to {self._transferee} in progress")
        if self._log.last_index - self._commit >= self.config.max_uncommitted_entries:
            raise RequestDropped("too many uncommitted entries")
        return self._append_own(EntryKind.NORMAL, data)

    def read_index(self, ctx: bytes) -> None:
        """Starts a linearizable read. A ``ReadState(ctx, index)`` appears in a later Ready
        once a quorum confirmed this leadership after the call; it never appears if this
        node loses leadership first."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        waiting = len(self._pending_reads) + len(self._reads_awaiting_commit)
        if waiting >= self.config.max_pending_reads:
            raise RequestDropped("too many pending reads")
        if self._committed_in_term():
            self._start_reads([ctx])
        else:
            self._reads_awaiting_commit.append(ctx)

    def transfer_leadership(self, to: NodeId) -> None:
        """Hands leadership to ``to`` once its log is current. Proposals are refused until
        the transfer completes or is abandoned after ``election_ticks_min`` ticks."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if to not in self._voters or to == self.id:
            raise ValueError(f"cannot transfer leadership to {to}")
        if self._transferee == to:
            return
        self._transferee = to
        self._election_elapsed = 0
        if self._progress[to].match == self._log.last_index:
            self._send(TimeoutNow(self.id, to, self._term))
        else:
            self._send_append(to)

    def set_storage_stalled(self, stalled: bool) -> None:
        """Tells the core whether the driver's storage write has been in flight too long.

        While stalled the node takes no part in elections: a leader or candidate steps down
        at once, keeping its term (a leader's heartbeats stop, so the others elect a
        leader whose disk works); it does not campaign, ignores TimeoutNow and refuses
        every vote, pre-votes included. It still follows a leader, so it catches up when
        the write completes and the driver clears the stall.

        A leader also sends TimeoutNow to the follower whose log matches furthest, so the
        others need not wait out an election timeout; if that follower cannot win, they
        elect one as usual.
        """
        self._storage_stalled = stalled
        matches = self.match_indexes()
        if stalled and self._role is Role.LEADER and matches:
            target = max(matches, key=matches.__getitem__)
            self._send(TimeoutNow(self.id, target, self._term))
        if stalled and self._role is not Role.FOLLOWER:
            self._become_follower(self._term, None)

    def propose_membership(self, membership: Membership) -> int:
        """Appends a configuration that adds, promotes or removes one server; returns its
        index. It counts from now on, on every node that appends it (dissertation §4.1).

        Refused (RequestDropped, retry later) while an earlier change is uncommitted or
        before this leader committed an entry of its term: the second rule closes the
        single-server-change hole Ongaro found (raft-dev, 2015). MembershipError for a
        change that is not one server, or that removes this leader: transfer first.
        """
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if not one_server_apart(self._membership, membership):
            raise MembershipError("a configuration change adds, promotes or removes one server")
        if self.id not in membership.voters:
            raise MembershipError(f"node {self.id} leads: transfer leadership before removing it")
        if self._transferee is not None:
            raise RequestDropped(f"leadership transfer to {self._transferee} in progress")
        if self._configs.current_index > self._commit:
            raise RequestDropped("an earlier configuration change is not committed yet")
        if not self._committed_in_term():
            raise RequestDropped("this leader has not committed an entry of its term yet")
        return self._append_own(EntryKind.CONFIG, membership.to_bytes())

    def compact(self, index: int, data: bytes) -> Compaction:
        """Records a state machine snapshot taken at applied ``index`` and compacts the log.
        The driver persists the returned Compaction (snapshot first, then log truncation)."""
        if not self._log.snapshot_index < index <= self._applied:
            raise ValueError(
                f"snapshot index {index} outside ({self._log.snapshot_index}, {self._applied}]"
            )
        term = self._log.term_at(index)
        assert term is not None
        snapshot = Snapshot(index, term, data, self._configs.at(index))
        through = max(self._log.base, index - self.config.snapshot_trailing)
        self._log.compact(snapshot, through)
        self._configs.compact(index)
        return Compaction(snapshot, through)

    # ----------------------------------------------------------------- output

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has work; always False while a Ready is outstanding."""
        if self._ready_outstanding:
            return False
        return bool(
            self._outbox
            or self._read_states
            or self._log.has_unstable()
            or self._pending_snapshot is not None
            or self._commit > self._applying
            or self._hard_state() != self._persisted
            or self.soft_state != self._reported_soft
        )

    def ready(self) -> Ready:
        """Hands out pending work. Call :meth:`advance` with it before the next ready()."""
        if self._ready_outstanding:
            raise RuntimeError("ready() called before advance() of the previous Ready")
        hs = self._hard_state()
        snapshot = self._pending_snapshot
        if snapshot is not None:
            self._applying = max(self._applying, snapshot.index)
        hi = min(self._commit, self._applying + self.config.max_committed_per_ready)
        committed = self._log.slice(self._applying + 1, hi + 1) if hi > self._applying else ()
        rd = Ready(
            soft_state=self.soft_state,
            hard_state=hs if hs != self._persisted else None,
            entries=self._log.take_unstable(),
            snapshot=snapshot,
            messages=tuple(self._outbox),
            committed_entries=committed,
            read_states=tuple(self._read_states),
            messages_may_precede_persist=self._sends_early(),
        )
        self._persisted = hs
        self._reported_soft = rd.soft_state
        self._applying = max(self._applying, hi)
        self._pending_snapshot = None
        self._outbox = []
        self._read_states = []
        self._ready_outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """Confirms ``rd`` was persisted, sent and applied as its contract requires."""
        if not self._ready_outstanding:
            raise RuntimeError("advance() without an outstanding Ready")
        self._ready_outstanding = False
        if rd.hard_state is not None:
            self._stored_term_vote = (rd.hard_state.term, rd.hard_state.vote)
        if rd.snapshot is not None:
            self._log.mark_durable(rd.snapshot.index, rd.snapshot.term)
            self._applied = max(self._applied, rd.snapshot.index)
        if rd.entries:
            self._log.mark_durable(rd.entries[-1].index, rd.entries[-1].term)
        if rd.committed_entries:
            self._applied = max(self._applied, rd.committed_entries[-1].index)
        if self._role is Role.LEADER:
            # The leader's own copy now counts toward commit.
            self._maybe_commit()

    def take_messages(self) -> tuple[Message, ...]:
        """Messages that may be sent at once, even while a Ready is being persisted.

        Nothing is released before this node's term and vote are on disk. Then a leader's
        messages may all go: its commit index never counts its own unpersisted entries, so
        nothing it sends promises anything about its disk (Raft dissertation §10.2.1). A
        follower's heartbeat answers may go too: they confirm its term, for the leader's
        check-quorum and ReadIndex, and nothing about its log; and so may the TimeoutNow
        a leader sent as its storage stalled. Everything else waits for the next Ready.
        Drivers call this while a write is in flight, so heartbeats keep flowing both ways
        however slow a disk is.
        """
        if (self._term, self._vote) != self._stored_term_vote:
            return ()
        if self._role is Role.LEADER:
            messages, self._outbox = tuple(self._outbox), []
            return messages
        early = tuple(m for m in self._outbox if isinstance(m, HeartbeatResponse | TimeoutNow))
        if early:
            self._outbox = [
                m for m in self._outbox if not isinstance(m, HeartbeatResponse | TimeoutNow)
            ]
        return early

    def _sends_early(self) -> bool:
        return self._role is Role.LEADER and (self._term, self._vote) == self._stored_term_vote

    # ----------------------------------------------------------------- roles

    def _random_timeout(self) -> int:
        return self._rng.randrange(self.config.election_ticks_min, self.config.election_ticks_max)

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._election_timeout = self._random_timeout()
        self._votes = {}
        self._progress = {}
        self._departing = {}
        self._transferee = None
        self._pending_reads.clear()
        self._reads_awaiting_commit.clear()

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._reset(term)
        self._role = Role.FOLLOWER
        self._leader = leader

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if pre_vote:
            self._reset(self._term)
            self._role = Role.PRE_CANDIDATE
            term = self._term + 1
        else:
            self._reset(self._term + 1)
            self._role = Role.CANDIDATE
            self._vote = self.id
            term = self._term
        self._votes[self.id] = True
        if self._quorum == 1:
            self._on_election_won(pre_vote)
            return
        last_index, last_term = self._log.last_index, self._log.last_term
        for peer in sorted(self._voters - {self.id}):
            self._send(RequestVote(self.id, peer, term, last_index, last_term, pre_vote, transfer))

    def _on_election_won(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False)
            return
        self._reset(self._term)
        self._role = Role.LEADER
        self._leader = self.id
        next_index = self._log.last_index + 1
        self._progress = {peer: Progress(next_index) for peer in self._others}
        # Servers an uncommitted change removed still need to hear that it committed.
        for peer in self._configs.at(self._commit).members:
            if peer not in self._membership.members and peer != self.id:
                self._progress[peer] = Progress(next_index)
                self._departing[peer] = (self._configs.current_index, self._departure_ticks())
        self._append_own(EntryKind.NOOP, b"")

    def _in_lease(self) -> bool:
        """Whether a leader was heard from recently enough that elections are refused."""
        return (
            self.config.check_quorum
            and self._leader is not None
            and self._election_elapsed < self.config.election_ticks_min
        )

    # ----------------------------------------------------------------- elections

    def _on_request_vote(self, m: RequestVote) -> None:
        # A node with no configuration yet (joining) has no vote to give. A learner does
        # answer: a voter whose promotion is still in flight to it can be needed for a
        # quorum, and its answer counts only where the candidate lists it as a voter.
        can_vote = (
            not self._storage_stalled
            and bool(self._membership.members)
            and (
                self._vote == m.frm
                or (self._vote is None and self._leader is None)
                or (m.pre_vote and m.term > self._term)
            )
        )
        if can_vote and self._log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._send(RequestVoteResponse(self.id, m.frm, m.term, True, m.pre_vote))
            if not m.pre_vote:
                self._vote = m.frm
                self._election_elapsed = 0
        else:
            self._send(RequestVoteResponse(self.id, m.frm, self._term, False, m.pre_vote))

    def _on_vote_response(self, m: RequestVoteResponse) -> None:
        if m.pre_vote:
            if self._role is not Role.PRE_CANDIDATE or (m.granted and m.term != self._term + 1):
                return
        elif self._role is not Role.CANDIDATE:
            return
        if m.frm not in self._voters:
            return
        self._votes.setdefault(m.frm, m.granted)
        granted = sum(self._votes.values())
        if granted >= self._quorum:
            self._on_election_won(m.pre_vote)
        elif len(self._votes) - granted >= self._quorum:
            self._become_follower(self._term, None)

    def _on_timeout_now(self) -> None:
        if self._role is not Role.LEADER and not self._storage_stalled and self.id in self._voters:
            self._campaign(pre_vote=False, transfer=True)

    # ----------------------------------------------------------------- follower side

    def _heard_from_leader(self, leader: NodeId) -> None:
        if self._role is not Role.FOLLOWER:
            self._become_follower(self._term, leader)
        self._leader = leader
        self._election_elapsed = 0

    def _commit_to(self, index: int) -> None:
        if index > self._commit:
            self._commit = index

    def _on_append(self, m: AppendEntries) -> None:
        self._heard_from_leader(m.frm)
        if m.prev_index < self._commit:
            # Everything up to our commit matches the leader (leader completeness).
            self._send(AppendEntriesResponse(self.id, m.frm, self._term, True, self._commit))
            return
        last_new = self._log.maybe_append(m.prev_index, m.prev_term, m.entries, self._commit)
        if last_new is not None and m.entries:
            self._configs.forget_replaced(self._log.term_at)
            self._configs.observe(m.entries)
            self._apply_membership()
        if last_new is None:
            hint = self._log.find_conflict_by_term(m.prev_index, m.prev_term)
            hint_term = self._log.term_at(hint) or 0
            self._send(
                AppendEntriesResponse(
                    self.id, m.frm, self._term, False, m.prev_index, hint, hint_term
                )
            )
            return
        self._commit_to(min(m.commit, last_new))
        self._send(AppendEntriesResponse(self.id, m.frm, self._term, True, last_new))

    def _on_heartbeat(self, m: Heartbeat) -> None:
        self._heard_from_leader(m.frm)
        # The leader sends min(commit, our match), so every index up to it matches its log.
        self._commit_to(min(m.commit, self._log.last_index))
        self._send(HeartbeatResponse(self.id, m.frm, self._term, m.seq))

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        self._heard_from_leader(m.frm)
        snap = m.snapshot
        if snap.index <= self._commit:
            index = self._commit
        elif self._log.term_at(snap.index) == snap.term:
            index = snap.index
            self._commit_to(index)
        else:
            index = snap.index
            self._log.install(snap)
            self._configs.reset(snap.membership or self.config.bootstrap_membership(), index)
            self._apply_membership()
            self._commit = index
            self._pending_snapshot = snap
        self._send(AppendEntriesResponse(self.id, m.frm, self._term, True, index))

    # ----------------------------------------------------------------- leader side

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        for pr in self._progress.values():
            pr.idle_ticks += 1
        if self._election_elapsed >= self.config.election_ticks_min:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self._become_follower(self._term, None)
                return
            self._transferee = None
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        self._forget_departed()
        self._maybe_promote()

    def _quorum_recently_active(self) -> bool:
        active = int(self.id in self._voters)
        for peer, pr in self._progress.items():
            active += pr.recent_active and peer in self._voters
            pr.recent_active = False
        return active >= self._quorum

    def _append_own(self, kind: EntryKind, data: bytes) -> int:
        index = self._log.last_index + 1
        entry = Entry(index, self._term, kind, data)
        self._log.append(entry)
        if kind is EntryKind.CONFIG:
            self._configs.observe((entry,))
            self._apply_membership()
        # Nothing to commit yet: the entry is on no disk until advance() says so.
        for peer in self._progress:
            self._send_append(peer)
        return index

    def _send_append(self, peer: NodeId) -> None:
        """Sends what ``peer`` lacks: one probe, a pipeline of batches, or the snapshot."""
        pr = self._progress[peer]
        if pr.state is ProgressState.SNAPSHOT or (
            pr.state is ProgressState.PROBE and pr.probe_sent
        ):
            return
        last = self._log.last_index
        while True:
            prev = pr.next - 1
            prev_term = self._log.term_at(prev)
            if prev_term is None:
                snapshot = self._log.snapshot
                assert snapshot is not None, "a compacted log always has a snapshot"
                self._send(InstallSnapshot(self.id, peer, self._term, snapshot))
                pr.become_snapshot(snapshot.index)
                return
            hi = min(last, prev + self.config.max_entries_per_msg)
            entries = self._log.slice(pr.next, hi + 1) if hi > prev else ()
            self._send(
                AppendEntries(self.id, peer, self._term, prev, prev_term, entries, self._commit)
            )
            if pr.state is ProgressState.PROBE:
                pr.probe_sent = True
                return
            if not entries:
                return
            pr.sent(hi)
            if hi == last or len(pr.inflight) >= self.config.max_inflight_msgs:
                return

    def _maybe_commit(self) -> None:
        """Advances commit to the quorum match index, counting only current-term entries.

        The leader counts its own log only as far as it is durable: an entry acknowledged
        by one follower and still in flight to the leader's disk is on one disk, not two.
        """
        matches = [pr.match for peer, pr in self._progress.items() if peer in self._voters]
        if self.id in self._voters:
            matches.append(self._log.durable_index)
        index = quorum_value(matches, self._quorum)
        if index <= self._commit:
            return
        if self._log.term_at(index) != self._term and not self.config.unsafe_commit_old_term:
            return
        first_in_term = not self._committed_in_term()
        self._commit = index
        # Followers learn the new commit from the next append or, at the latest, from a
        # heartbeat on the next tick, not from a round of messages of its own: with one
        # write in flight that round cost a fifth of every write.
        self._heartbeat_elapsed = max(self._heartbeat_elapsed, self.config.heartbeat_ticks - 1)
        if first_in_term and self._committed_in_term() and self._reads_awaiting_commit:
            ctxs, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            self._start_reads(ctxs)

    def _committed_in_term(self) -> bool:
        return self._log.term_at(self._commit) == self._term

    def _on_append_response(self, m: AppendEntriesResponse) -> None:
        pr = self._progress.get(m.frm)
        if self._role is not Role.LEADER or pr is None:
            return
        pr.recent_active = True
        if not m.success:
            probe_hint = self._log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.on_reject(m.index, probe_hint):
                self._send_append(m.frm)
            return
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = False
        if pr.on_match(m.index):
            self._maybe_commit()
            if m.frm == self._transferee and pr.match == self._log.last_index:
                self._send(TimeoutNow(self.id, m.frm, self._term))
        if pr.next <= self._log.last_index:
            self._send_append(m.frm)

    def _broadcast_heartbeat(self) -> None:
        self._hb_seq += 1
        for peer, pr in self._progress.items():
            commit = min(pr.match, self._commit)
            self._send(Heartbeat(self.id, peer, self._term, commit, self._hb_seq))

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self._progress.get(m.frm)
        if self._role is not Role.LEADER or pr is None:
            return
        pr.recent_active = True
        pr.acked_seq = max(pr.acked_seq, m.seq)
        if pr.match < self._log.last_index:
            # Retransmit: a lost append or snapshot is resent once its answer is overdue.
            if pr.state is ProgressState.PROBE:
                pr.probe_sent = False
            elif pr.idle_ticks >= self._retransmit_ticks(pr.state):
                pr.become_probe()
            if pr.state is ProgressState.PROBE or pr.next <= self._log.last_index:
                self._send_append(m.frm)
        self._release_reads()

    def _retransmit_ticks(self, state: ProgressState) -> int:
        if state is ProgressState.SNAPSHOT:
            return self.config.election_ticks_min
        return 2 * self.config.heartbeat_ticks

    def _start_reads(self, ctxs: list[bytes]) -> None:
        """Queues reads at the current commit behind a fresh heartbeat round."""
        self._broadcast_heartbeat()
        for ctx in ctxs:
            self._pending_reads.append((self._hb_seq, ReadState(ctx, self._commit)))
        self._release_reads()

    def _release_reads(self) -> None:
        if not self._pending_reads:
            return
        seqs = [pr.acked_seq for peer, pr in self._progress.items() if peer in self._voters]
        if self.id in self._voters:
            seqs.append(self._hb_seq)
        confirmed = quorum_value(seqs, self._quorum)
        while self._pending_reads and self._pending_reads[0][0] <= confirmed:
            self._read_states.append(self._pending_reads.popleft()[1])

    # ----------------------------------------------------------------- membership

    def _apply_membership(self) -> None:
        """Switches to the newest configuration in the log, if it changed."""
        membership = self._configs.current
        if membership is self._membership:
            return
        self._membership = membership
        self._voters = frozenset(membership.voters)
        self._others = tuple(sorted(i for i in membership.members if i != self.id))
        self._quorum = membership.quorum()
        if self._role is not Role.LEADER:
            return
        for peer in self._others:
            if peer not in self._progress:
                self._progress[peer] = Progress(self._log.last_index + 1)
            self._departing.pop(peer, None)
        for peer in self._progress:
            if peer not in membership.members and peer not in self._departing:
                self._departing[peer] = (self._configs.current_index, self._departure_ticks())

    def _departure_ticks(self) -> int:
        return self.config.election_ticks_min

    def _forget_departed(self) -> None:
        """Stops replicating to a removed server some ticks after its removal committed:
        meanwhile its heartbeats carry the commit, so a live one learns it was removed."""
        for peer, (index, ticks) in list(self._departing.items()):
            if index > self._commit:
                continue
            if ticks > 0:
                self._departing[peer] = (index, ticks - 1)
                continue
            del self._departing[peer]
            del self._progress[peer]

    def _maybe_promote(self) -> None:
        """Promotes the first learner whose log is within ``learner_promotion_lag`` entries
        of this leader's, once no other change is in flight."""
        if (
            not self._membership.learners
            or self._transferee is not None
            or self._configs.current_index > self._commit
            or not self._committed_in_term()
        ):
            return
        for peer in sorted(self._membership.learners):
            match = self._progress[peer].match
            if match > 0 and self._log.last_index - match <= self.config.learner_promotion_lag:
                self._append_own(EntryKind.CONFIG, self._membership.promote(peer).to_bytes())
                return

    # ----------------------------------------------------------------- plumbing

    def _send(self, m: Message) -> None:
        self._outbox.append(m)

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._commit)
