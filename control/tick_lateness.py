"""How late the Raft ticker runs, and why.

A control node's event loop that stands still sends no heartbeats, and a leader silent for
longer than the followers' election timeout (200-400 ms) costs an election. The loop can
stand still for two reasons that call for different cures: the node's own work (a burst of
requests, a garbage collection), or a host short of CPU, where the thread is ready to run
and waits for a core. The ticker's lateness says how long the loop stood still; the
thread's scheduler statistics (Linux, /proc/thread-self/schedstat: nanoseconds run and
nanoseconds waited on a run queue) say which of the two it was. Measured in
bench.control_scale: elections at N = 1,000 came with stalls the thread spent two thirds
of waiting for a CPU (BENCHMARKS.md, "Control plane at scale").
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("ringleader.raft")

SCHEDSTAT = Path("/proc/thread-self/schedstat")
WARN_AFTER = 0.1  # seconds: half the shortest election timeout
WARN_EVERY = 10.0  # seconds between two warnings, at most one in each


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


def read_schedstat(path: Path = SCHEDSTAT) -> tuple[float, float] | None:
    """Seconds this thread has run and has waited for a CPU; None where the kernel does
    not say (not Linux, or no schedstats)."""
    try:
        ran, waited, _ = path.read_text().split()
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


class TickLateness:
    """Call `ticked(late)` from the ticker, on its thread, with how late the tick ran."""

    def __init__(
        self,
        histogram: Observer,
        clock: Callable[[], float] = time.monotonic,
        schedstat: Callable[[], tuple[float, float] | None] = read_schedstat,
    ) -> None:
        self._histogram = histogram
        self._clock = clock
        self._schedstat = schedstat
        self._cpu = schedstat()
        self._warned_at = -math.inf
        self._unwarned = 0

    def ticked(self, late: float) -> None:
        cpu = self._schedstat()
        before, self._cpu = self._cpu, cpu
        self._histogram.observe(late)
        if late < WARN_AFTER:
            return
        now = self._clock()
        if now - self._warned_at < WARN_EVERY:
            self._unwarned += 1
            return
        ctx: dict[str, object] = {"late_s": round(late, 3), "unwarned": self._unwarned}
        cause = ""
        if cpu is not None and before is not None:
            ran, waited = cpu[0] - before[0], cpu[1] - before[1]
            ctx |= {"ran_s": round(ran, 3), "waited_for_cpu_s": round(waited, 3)}
            cause = "; " + _cause(late, ran, waited)
        log.warning(
            "event loop stood still for %.0f ms, so heartbeats were late%s",
            1000 * late, cause, extra={"ctx": ctx},
        )  # fmt: skip
        self._warned_at, self._unwarned = now, 0


def _cause(late: float, ran: float, waited: float) -> str:
    if ran + waited < late / 2:
        return (
            "it neither ran nor waited for a CPU most of that time: the process was "
            "stopped or paused, or blocked in a system call"
        )
    if waited > ran:
        return "it waited for a CPU most of that time: the host is short of CPU"
    return "it ran most of that time: this node's own work held it"
