"""Linearizability checker for a map of independent registers (Wing-Gong-Lowe search).

Model
-----
Every key is an independent register whose initial value is ``None`` (absent). Operations:

* ``read``            -> the current value (``None`` if absent); does not change it.
* ``write(v)``        -> sets the value to ``v``.
* ``delete``          -> sets the value to ``None``.
* ``cas(e, n)``       -> if the value equals ``e``, sets it to ``n`` and returns ``True``;
                         otherwise leaves it and returns ``False``.

A history is linearizable iff for every key there is a total order of that key's operations that
(a) respects real time: if ``a`` returned before ``b`` was invoked, ``a`` precedes ``b``; and
(b) is a legal sequential execution of the register. Linearizability is local (Herlihy & Wing),
so the map is checked one key at a time (the P-compositionality partitioning of Horn & Kroening),
which keeps each search small and independent.

Unknown outcomes
----------------
An operation whose result the client never learned (timeout, connection reset, node killed) is
recorded with ``ret = math.inf``. It may have taken effect at any instant after its invocation,
or never. The checker therefore may linearize it anywhere after its invocation, or leave it out;
it never forces any other operation to wait for it. An unknown-outcome *read* constrains nothing
(it has no effect and no observed output), so it is dropped before the search. An operation that
*definitely* did not take effect (``OpHandle.fail``) is dropped from the history entirely.

Timestamps that tie (``a.ret == b.inv``) are treated as concurrent, never as ordered, so clock
granularity can cause a missed violation but never a false one.

Search (Lowe, "Testing for linearizability", 2017)
--------------------------------------------------
Per key, the call and return events of the known-outcome operations are kept in a doubly linked
list sorted by time (calls before returns on ties). A search configuration is (set of linearized
operations, register value). From a configuration, the candidates are the known ops whose calls
precede the first remaining return event, plus the unlinearized unknown-outcome ops invoked by
that return's time: exactly the operations that may go next without violating real-time order.
The depth-first search linearizes a candidate (checking it against the register model), lifts its
events out of the list, and repeats. When every candidate of a configuration has been tried, the
op of the first remaining return cannot be placed there: the search backtracks and restores the
events (dancing links). It succeeds once every known-outcome operation is linearized.
Configurations already explored are memoised, so each is expanded at most once.

Refinements, each sound because any linearization can be rewritten into the shape the search
still explores (by moving a state-preserving op earlier, or by dropping unknown ops, which are
allowed never to take effect):

1. Forced moves: if a known read or failed cas is legal in the current value, it is linearized
   next without trying alternatives (it can be moved to this point of any linearization).
2. Known-outcome candidates are tried before unknown-outcome ones, and an unknown-outcome op is
   tried only if it changes the value and some candidate could observe the new value next
   (a read returning it, a cas comparing against it, or a failed cas it makes fail).
3. Directly after an unknown-outcome op, the search never places a write or delete (which would
   overwrite its effect unobserved) or an op that is also legal without it and leaves the value
   unchanged (the two commute).
4. The memo table is keyed by (linearized known ops, value, move restriction of rule 3) and
   stores the minimal sets of linearized unknown ops seen with that key: a configuration whose
   unknown set is a superset of a stored one is dominated (fewer unknowns linearized is more
   permissive) and is skipped.

The search is bounded by ``max_states`` memoised configurations per key (each costs roughly
10-50 microseconds); hitting the bound yields an explicit :class:`Unknown` result rather than an
unbounded run. Linearizable histories are cheap (a few states per op); refuting a violation must
exhaust every configuration before it, which is where the bound matters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

Value: TypeAlias = Hashable
"""A register value. ``None`` means absent. Values are compared with ``==``."""

ClientId: TypeAlias = str | int

DEFAULT_MAX_STATES = 100_000


class OpKind(StrEnum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"
    DELETE = "delete"


_BLIND = frozenset({OpKind.WRITE, OpKind.DELETE})


@dataclass(frozen=True, slots=True)
class Op:
    """One completed or unknown-outcome operation.

    ``value`` is the written value (write) or the new value (cas); ``expected`` is the cas
    comparand. ``output`` is the value read (read) or the success flag (cas), and ``None`` for
    write, delete and any unknown-outcome op. ``ret`` is ``math.inf`` iff the outcome is unknown.
    """

    client: ClientId
    kind: OpKind
    key: str
    inv: float
    ret: float
    value: Value = None
    expected: Value = None
    output: Value = None

    @property
    def unknown_outcome(self) -> bool:
        return self.ret == math.inf

    def __str__(self) -> str:
        match self.kind:
            case OpKind.WRITE:
                call = f"write({self.key!r}, {self.value!r})"
            case OpKind.CAS:
                call = f"cas({self.key!r}, {self.expected!r}, {self.value!r})"
            case OpKind.READ | OpKind.DELETE:
                call = f"{self.kind}({self.key!r})"
        if self.unknown_outcome:
            return f"{self.client}: {call} -> ? [{self.inv:.6f}, inf)"
        result = f" -> {self.output!r}" if self.kind in (OpKind.READ, OpKind.CAS) else ""
        return f"{self.client}: {call}{result} [{self.inv:.6f}, {self.ret:.6f}]"


class _Status(StrEnum):
    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class _Record:
    client: ClientId
    kind: OpKind
    key: str
    value: Value
    expected: Value
    inv: float
    status: _Status = _Status.PENDING
    output: Value = None
    ret: float = math.inf


@dataclass(frozen=True, slots=True)
class OpHandle:
    """Resolves one invoked operation exactly once: ``ok``, ``fail`` or ``unknown``."""

    history: History
    slot: int

    def ok(self, output: Value = None, *, at: float | None = None) -> None:
        """The operation completed; ``output`` is the read value or the cas success flag."""
        record = self.history._resolve(self.slot, _Status.OK)
        if record.kind is OpKind.CAS and not isinstance(output, bool):
            raise TypeError(f"cas output must be bool, got {output!r}")
        if record.kind in _BLIND and output is not None:
            raise ValueError(f"{record.kind} has no output, got {output!r}")
        ret = self.history.clock() if at is None else at
        if ret < record.inv:
            raise ValueError(f"return time {ret} precedes invocation time {record.inv}")
        record.output = output
        record.ret = ret

    def fail(self) -> None:
        """The operation definitely did not take effect; it is dropped from the history."""
        self.history._resolve(self.slot, _Status.FAILED)

    def unknown(self) -> None:
        """The outcome is unknown (timeout, reset, crash): it may or may not have taken effect."""
        self.history._resolve(self.slot, _Status.UNKNOWN)


class History:
    """Records operations from concurrent clients (asyncio tasks or threads).

    Times come from ``clock`` (``time.monotonic`` by default) unless given with ``at=``.
    An operation still pending when :meth:`ops` is called is treated as unknown-outcome.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._records: list[_Record] = []

    def invoke(
        self,
        client: ClientId,
        kind: OpKind,
        key: str,
        value: Value = None,
        *,
        expected: Value = None,
        at: float | None = None,
    ) -> OpHandle:
        inv = self.clock() if at is None else at
        if not math.isfinite(inv):
            raise ValueError(f"invocation time must be finite, got {inv}")
        self._records.append(_Record(client, kind, key, value, expected, inv))
        return OpHandle(self, len(self._records) - 1)

    def read(self, client: ClientId, key: str, *, at: float | None = None) -> OpHandle:
        return self.invoke(client, OpKind.READ, key, at=at)

    def write(
        self, client: ClientId, key: str, value: Value, *, at: float | None = None
    ) -> OpHandle:
        return self.invoke(client, OpKind.WRITE, key, value, at=at)

    def cas(
        self,
        client: ClientId,
        key: str,
        expected: Value,
        new: Value,
        *,
        at: float | None = None,
    ) -> OpHandle:
        return self.invoke(client, OpKind.CAS, key, new, expected=expected, at=at)

    def delete(self, client: ClientId, key: str, *, at: float | None = None) -> OpHandle:
        return self.invoke(client, OpKind.DELETE, key, at=at)

    def ops(self) -> tuple[Op, ...]:
        """The recorded history: failed ops dropped, pending ops as unknown-outcome."""
        return tuple(
            Op(
                r.client,
                r.kind,
                r.key,
                r.inv,
                r.ret if r.status is _Status.OK else math.inf,
                r.value,
                r.expected,
                r.output if r.status is _Status.OK else None,
            )
            for r in self._records
            if r.status is not _Status.FAILED
        )

    def _resolve(self, slot: int, status: _Status) -> _Record:
        record = self._records[slot]
        if record.status is not _Status.PENDING:
            raise RuntimeError(f"operation already resolved as {record.status}: {record}")
        record.status = status
        return record


@dataclass(frozen=True, slots=True)
class Ok:
    keys: int
    ops: int
    states: int


@dataclass(frozen=True, slots=True)
class Violation:
    """No linearization exists for ``key``.

    Explains the deepest point the search reached: after linearizing ``prefix`` (in order) the
    register held ``state``; ``stuck`` had returned by then, so it had to be linearized next
    (possibly after some of ``pending``, the other ops that could go next), but no choice led
    to a linearization of the whole history.
    """

    key: str
    prefix: tuple[Op, ...] = field(repr=False)
    state: Value
    stuck: Op
    pending: tuple[Op, ...]
    states: int

    def explain(self, context: int = 5) -> str:
        shown = self.prefix[-context:] if context > 0 else ()
        lines = [f"key {self.key!r} is not linearizable."]
        lines.append(
            f"Longest linearizable prefix: {len(self.prefix)} ops"
            + (f", ending with the last {len(shown)}:" if shown else ".")
        )
        lines.extend(f"    {op}" for op in shown)
        lines.append(f"Register value after it: {self.state!r}")
        lines.append(f"Cannot place (returned, so it must go next): {self.stuck}")
        lines.append("Other ops that could have gone first:")
        lines.extend(f"    {op}" for op in self.pending)
        if not self.pending:
            lines.append("    (none)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


@dataclass(frozen=True, slots=True)
class Unknown:
    """The search bound was hit for ``keys`` (and no other key has a violation)."""

    keys: tuple[str, ...]
    max_states: int
    states: int


CheckResult: TypeAlias = Ok | Violation | Unknown


def check(history: History | Iterable[Op], *, max_states: int = DEFAULT_MAX_STATES) -> CheckResult:
    """Check ``history`` for linearizability, key by key, exploring at most ``max_states``
    configurations per key. A violation on any key wins over the bound being hit on another."""
    if max_states < 1:
        raise ValueError("max_states must be positive")
    ops = history.ops() if isinstance(history, History) else tuple(history)
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        if not math.isfinite(op.inv) or op.ret < op.inv:
            raise ValueError(f"bad times on {op!r}")
        if op.kind is OpKind.READ and op.unknown_outcome:
            continue
        by_key.setdefault(op.key, []).append(op)
    total_states = 0
    exhausted: list[str] = []
    for key in sorted(by_key):
        result = _check_key(key, by_key[key], max_states)
        if isinstance(result, Violation):
            return result
        total_states += result
        if result > max_states:
            exhausted.append(key)
    if exhausted:
        return Unknown(tuple(exhausted), max_states, total_states)
    return Ok(len(by_key), sum(len(v) for v in by_key.values()), total_states)


def _step(op: Op, state: Value) -> tuple[bool, Value]:
    """Apply ``op`` to a register holding ``state``: (legal?, new value)."""
    match op.kind:
        case OpKind.READ:
            return state == op.output, state
        case OpKind.WRITE:
            return True, op.value
        case OpKind.DELETE:
            return True, None
        case OpKind.CAS:
            matches = state == op.expected
            if op.unknown_outcome:
                return True, op.value if matches else state
            if op.output:
                return matches, op.value
            return not matches, state


_Restriction: TypeAlias = tuple[Value, ...]
"""Move restriction of a configuration: ``()`` if the last move was a known-outcome op,
``(s,)`` if it was an unknown-outcome op applied to a register holding ``s``."""


class _Frame:
    """A configuration on the DFS stack and the move that produced it."""

    __slots__ = (
        "any_change",
        "bound",
        "candidates",
        "expanded",
        "move",
        "next",
        "prev_restriction",
        "prev_state",
        "stuck",
        "values",
        "window",
    )

    def __init__(
        self,
        move: int,
        prev_state: Value,
        prev_restriction: _Restriction,
        window: list[int],
        candidates: list[int],
        stuck: int,
        bound: float,
    ) -> None:
        self.move = move
        self.prev_state = prev_state
        self.prev_restriction = prev_restriction
        self.window = window  # unlinearized known ops that may go next under real-time order
        self.candidates = candidates  # moves to try in order; unknown ops appended on expansion
        self.stuck = stuck  # the unlinearized known op that returned first
        self.bound = bound  # its return time: unknown ops invoked by then may go next
        self.next = 0
        self.expanded = False
        # Set on expansion: the values an unknown op must produce to enable a candidate next,
        # and whether any change of value would (a known failed cas whose comparand is current).
        self.values: frozenset[Value] = frozenset()
        self.any_change = False


def _check_key(key: str, ops: list[Op], max_states: int) -> int | Violation:
    """Search one key. Returns the number of memoised configurations (> ``max_states`` means
    the bound was hit) or the violation."""
    n = len(ops)
    # Known-outcome ops only: entry 0 is the list head; op i has call entry 1+i and return entry
    # 1+n+i. Invariant: the list holds exactly the events of unlinearized known ops.
    events = sorted(
        [(op.inv, 0, 1 + i) for i, op in enumerate(ops) if not op.unknown_outcome]
        + [(op.ret, 1, 1 + n + i) for i, op in enumerate(ops) if not op.unknown_outcome]
    )
    size = 1 + 2 * n
    nxt = [-1] * size
    prv = [-1] * size
    prev_entry = 0
    for _, _, entry in events:
        nxt[prev_entry] = entry
        prv[entry] = prev_entry
        prev_entry = entry

    known_bit = [0 if op.unknown_outcome else 1 << i for i, op in enumerate(ops)]
    unknown_bit = [1 << i if op.unknown_outcome else 0 for i, op in enumerate(ops)]
    blind = [op.kind in _BLIND for op in ops]
    remaining = len(events) // 2
    # Unknown-outcome ops, each in invocation order: all of them, blind ones by the value they
    # produce, and cas ones.
    unknown_ops = sorted((i for i in range(n) if unknown_bit[i]), key=lambda i: ops[i].inv)
    unknown_blind: dict[Value, list[int]] = {}
    unknown_cas: list[int] = []
    for i in unknown_ops:
        if blind[i]:
            unknown_blind.setdefault(_step(ops[i], None)[1], []).append(i)
        else:
            unknown_cas.append(i)

    def unlink(entry: int) -> None:
        nxt[prv[entry]] = nxt[entry]
        if nxt[entry] != -1:
            prv[nxt[entry]] = prv[entry]

    def relink(entry: int) -> None:
        nxt[prv[entry]] = entry
        if nxt[entry] != -1:
            prv[nxt[entry]] = entry

    def frame(move: int, prev_state: Value, prev_restriction: _Restriction, state: Value) -> _Frame:
        window: list[int] = []
        forced = -1
        entry = nxt[0]
        while entry <= n:  # remaining > 0 here, so a return entry (> n) ends the walk
            i = entry - 1
            window.append(i)
            if forced < 0 and not blind[i]:
                legal, after = _step(ops[i], state)
                if legal and after == state:
                    forced = i
            entry = nxt[entry]
        stuck = entry - 1 - n
        # A known op that is legal now and leaves the value unchanged can always be moved to
        # this point of any linearization, so it is linearized next without alternatives.
        candidates = [forced] if forced >= 0 else list(window)
        bound = ops[stuck].ret
        built = _Frame(move, prev_state, prev_restriction, window, candidates, stuck, bound)
        built.expanded = forced >= 0
        return built

    def expand(top: _Frame, state: Value, unknown_set: int) -> None:
        """Append the unknown ops worth trying: those invoked by ``top.bound``, not yet
        linearized, that could enable some op to go next."""
        top.expanded = True
        values: set[Value] = set()
        any_change = False
        for i in top.window:
            op = ops[i]
            if op.kind is OpKind.READ:
                values.add(op.output)
            elif op.kind is OpKind.CAS:
                if op.output:
                    values.add(op.expected)
                elif op.expected == state:
                    any_change = True
        cas_pool = [i for i in unknown_cas if ops[i].inv <= top.bound]
        values.update(ops[i].expected for i in cas_pool)
        top.values = frozenset(values)
        top.any_change = any_change
        if any_change:
            pool = [i for i in unknown_ops if ops[i].inv <= top.bound]
        else:
            pool = [i for v in values for i in unknown_blind.get(v, ()) if ops[i].inv <= top.bound]
            pool += cas_pool
        top.candidates.extend(i for i in pool if not unknown_set & unknown_bit[i])

    # (known set, value, restriction) -> antichain of the unknown sets explored with that key.
    memo: dict[tuple[int, Value, _Restriction], list[int]] = {}
    states = 0
    known_set = 0
    unknown_set = 0
    state: Value = None
    restriction: _Restriction = ()
    path: list[int] = []
    # Deepest dead end so far: (known ops still unlinearized, path, value, its frame).
    best: tuple[int, list[int], Value, _Frame] | None = None

    if remaining == 0:
        return 0
    stack = [frame(-1, None, (), None)]
    while True:
        top = stack[-1]
        if top.next == len(top.candidates):
            if not top.expanded:
                expand(top, state, unknown_set)
                continue
            if not restriction and (best is None or remaining < best[0]):
                best = (remaining, list(path), state, top)
            stack.pop()
            if not stack:
                break
            i = top.move
            path.pop()
            if known_bit[i]:
                relink(1 + n + i)
                relink(1 + i)
                remaining += 1
            known_set &= ~known_bit[i]
            unknown_set &= ~unknown_bit[i]
            state = top.prev_state
            restriction = top.prev_restriction
            continue
        i = top.candidates[top.next]
        top.next += 1
        op = ops[i]
        is_unknown = unknown_bit[i] != 0
        if restriction and blind[i]:
            continue  # would overwrite the preceding unknown op's effect unobserved
        legal, new_state = _step(op, state)
        if not legal:
            continue
        if new_state == state:
            if is_unknown:
                continue  # an unknown op without effect is the same as leaving it out
            if restriction and _step(op, restriction[0])[0]:
                continue  # commutes with the preceding unknown op, which is then pointless
        if is_unknown and not top.any_change and new_state not in top.values:
            continue  # nothing could observe its effect next
        new_known = known_set | known_bit[i]
        new_unknown = unknown_set | unknown_bit[i]
        new_restriction: _Restriction = (state,) if is_unknown else ()
        if _dominated(memo, new_known, new_state, new_restriction, new_unknown):
            continue
        states += 1
        if states > max_states:
            return states
        antichain = memo.setdefault((new_known, new_state, new_restriction), [])
        # Keep the antichain minimal: stored supersets of the new set are now dominated by it.
        antichain[:] = [u for u in antichain if new_unknown & ~u]
        antichain.append(new_unknown)

        if not is_unknown:
            unlink(1 + i)
            unlink(1 + n + i)
            remaining -= 1
            if remaining == 0:
                return states
        path.append(i)
        stack.append(frame(i, state, restriction, new_state))
        known_set, unknown_set = new_known, new_unknown
        state, restriction = new_state, new_restriction

    assert best is not None  # the root frame is exhausted unrestricted before the loop ends
    _, best_path, best_state, stuck_frame = best
    stuck = stuck_frame.stuck
    return Violation(
        key=key,
        prefix=tuple(ops[j] for j in best_path),
        state=best_state,
        stuck=ops[stuck],
        pending=tuple(
            ops[j] for j in dict.fromkeys(stuck_frame.window + stuck_frame.candidates) if j != stuck
        ),
        states=states,
    )


def _dominated(
    memo: dict[tuple[int, Value, _Restriction], list[int]],
    known_set: int,
    state: Value,
    restriction: _Restriction,
    unknown_set: int,
) -> bool:
    """True if an explored configuration with the same known set and value, a subset of the
    unknown ops linearized, and no stricter move restriction subsumes this one."""
    for stored_restriction in ((), restriction) if restriction else ((),):
        for stored in memo.get((known_set, state, stored_restriction), ()):
            if stored & ~unknown_set == 0:
                return True
    return False
