"""Membership changes under faults: seeded random runs checked by control.raft.config_checks.

Each seed fixes every event. Nodes are the simulator's reference driver (LocalNode);
the network drops, duplicates and reorders messages and cuts nodes off; nodes crash and
restart from their storage. Meanwhile the leader adds learners (new IDs that join with no
configuration), promotes them once caught up (the core does), removes members (the
leader after a transfer) and takes proposals. After every tick the checker verifies
election safety, one change in flight and that committed configurations move one server
at a time and never readmit a removed ID; at the end the faults heal and the cluster must
agree on one configuration and commit a write.

Snapshots are off here so every node applies every configuration entry (the sequence check
needs them all); tests/control/raft/test_membership.py covers configurations in snapshots.
"""

from __future__ import annotations

import random

import pytest

from control.raft.config import RaftConfig
from control.raft.config_checks import ConfigChecker, ConfigViolation
from control.raft.configlog import ConfigLog
from control.raft.errors import NotLeader, RequestDropped
from control.raft.membership import Membership, MembershipError
from control.raft.messages import Message
from control.raft.simnode import LocalNode
from control.raft.types import NodeId, Role

SEEDS = 60
LONG_SEEDS = 2000
FAULT_TICKS = 400
HEAL_TICKS = 400
MAX_NODES = 7


def url(i: NodeId) -> str:
    return f"http://127.0.0.1:{7000 + i}"


class MembershipRun:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.bootstrap = (1, 2, 3)
        self.nodes: dict[NodeId, LocalNode] = {}
        self.down: set[NodeId] = set()
        self.stopped: set[NodeId] = set()
        self.cut: set[NodeId] = set()
        self.pending: list[Message] = []
        self.checker = ConfigChecker(Membership.of_voters({i: url(i) for i in self.bootstrap}))
        self.next_id = 4
        self.drop = self.rng.uniform(0, 0.2)
        self.duplicate = self.rng.uniform(0, 0.1)
        for i in self.bootstrap:
            self.nodes[i] = self._node(i)

    def _config(self, i: NodeId) -> RaftConfig:
        peers = self.bootstrap if i in self.bootstrap else ()
        return RaftConfig(
            node_id=i, peers=peers, peer_urls=tuple((p, url(p)) for p in self.bootstrap),
            snapshot_threshold=1 << 30, learner_promotion_lag=self.rng.choice((0, 4, 64)),
        )  # fmt: skip

    def _node(self, i: NodeId, storage: LocalNode | None = None) -> LocalNode:
        rng = random.Random(self.rng.random())
        return LocalNode(self._config(i), rng, storage.storage if storage else None)

    def live(self) -> list[NodeId]:
        return [i for i in self.nodes if i not in self.down and i not in self.stopped]

    def tick(self, faults: bool) -> None:
        for i in self.live():
            self.nodes[i].core.tick()
        self._deliver(faults)
        for i in self.live():
            node = self.nodes[i]
            while (rd := node.process_ready(self.pending.extend)) is not None:
                self.checker.observe_committed(i, rd.committed_entries)
            self.checker.observe_core(i, node.core)
            if node.core.removed:
                self.stopped.add(i)  # what the driver does: a removed node stops

    def _deliver(self, faults: bool) -> None:
        batch, self.pending = self.pending, []
        if faults:
            self.rng.shuffle(batch)
        live = set(self.live())
        for m in batch:
            if m.to not in live or m.to in self.cut or m.frm in self.cut:
                continue
            if faults and self.rng.random() < self.drop:
                continue
            if faults and self.rng.random() < self.duplicate:
                self.pending.append(m)
            self.nodes[m.to].core.step(m)

    def leader(self) -> NodeId | None:
        leaders = [i for i in self.live() if self.nodes[i].core.role is Role.LEADER]
        return max(leaders, key=lambda i: self.nodes[i].core.term) if leaders else None

    def fault(self) -> None:
        roll = self.rng.random()
        if roll < 0.02 and self.live():
            victim = self.rng.choice(self.live())
            self.down.add(victim)
            self.pending = [m for m in self.pending if m.to != victim]
        elif roll < 0.06 and self.down:
            back = self.rng.choice(sorted(self.down))
            self.down.discard(back)
            self.nodes[back] = self._node(back, self.nodes[back])
        elif roll < 0.08:
            self.cut = {self.rng.choice(list(self.nodes))} if self.rng.random() < 0.5 else set()

    def change(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        core = self.nodes[leader].core
        m = core.membership
        try:
            roll = self.rng.random()
            if roll < 0.5 and len(self.nodes) < MAX_NODES:
                new = self.next_id
                proposed = m.add_learner(new, url(new))
                core.propose_membership(proposed)
                self.next_id += 1
                self.nodes[new] = self._node(new)
            elif roll < 0.8 and len(m.voters) > 2:
                target = self.rng.choice(sorted(m.members))
                if target == leader:
                    core.transfer_leadership(self.rng.choice(sorted(set(m.voters) - {leader})))
                else:
                    core.propose_membership(m.remove(target))
            else:
                core.propose(f"{self.seed}-{self.rng.random()}".encode())
        except (RequestDropped, NotLeader, MembershipError):
            pass

    def run(self) -> None:
        for _ in range(FAULT_TICKS):
            self.fault()
            if self.rng.random() < 0.05:
                self.change()
            self.tick(faults=True)
        self.down.clear()
        self.cut.clear()
        for i in list(self.nodes):
            if i not in self.stopped:
                self.nodes[i] = self._node(i, self.nodes[i])
        for _ in range(HEAL_TICKS):
            self.tick(faults=False)
            if self._agreed():
                return
        raise AssertionError(f"seed {self.seed}: no agreement after healing: {self._describe()}")

    def _agreed(self) -> bool:
        leader = self.leader()
        if leader is None:
            return False
        lead = self.nodes[leader].core
        if lead.membership_index > lead.commit_index:
            return False
        members = [i for i in lead.membership.members if i not in self.stopped]
        return all(
            self.nodes[i].core.membership == lead.membership
            and self.nodes[i].core.commit_index == lead.commit_index
            for i in members
        )

    def _describe(self) -> str:
        return "; ".join(
            f"{i}: {n.core.role.value} t{n.core.term} c{n.core.commit_index} "
            f"voters {sorted(n.core.membership.voters)} "
            f"learners {sorted(n.core.membership.learners)}"
            for i, n in self.nodes.items()
            if i not in self.stopped
        )


def run_seeds(first: int, count: int) -> tuple[int, int]:
    """Runs seeds; returns (committed changes seen, seeds). Raises naming the failing seed."""
    changes = 0
    for seed in range(first, first + count):
        run = MembershipRun(seed)
        try:
            run.run()
        except ConfigViolation as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
        changes += len(run.checker.committed)
    return changes, count


def test_membership_changes_under_faults_keep_the_configuration_invariants() -> None:
    print(f"seeds 0..{SEEDS - 1}")
    changes, _ = run_seeds(0, SEEDS)
    # The runs must really change the configuration, or they prove nothing.
    assert changes >= SEEDS


@pytest.mark.long
def test_membership_changes_under_faults_many_seeds() -> None:
    print(f"seeds {SEEDS}..{SEEDS + LONG_SEEDS - 1}")
    run_seeds(SEEDS, LONG_SEEDS)


def test_the_checker_catches_two_changes_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proof the checker can fail: a leader that skips the one-change rule."""
    run = MembershipRun(1)
    for _ in range(60):
        run.tick(faults=False)
    leader = run.leader()
    assert leader is not None
    core = run.nodes[leader].core
    run.cut = set(core.membership.voters) - {leader}
    core.propose_membership(core.membership.add_learner(9, url(9)))
    # Plant the bug: the core no longer sees the change in flight.
    monkeypatch.setattr(ConfigLog, "current_index", property(lambda _: 0))
    core.propose_membership(core.membership.remove(9))
    with pytest.raises(ConfigViolation, match="2 uncommitted configuration entries"):
        run.checker.observe_core(leader, core)
