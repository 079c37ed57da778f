"""How late the Raft ticker runs, and why: with fake scheduler statistics, then in a real
control node stopped with SIGSTOP."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from control.tick_lateness import WARN_AFTER, WARN_EVERY, TickLateness, read_schedstat
from tests.support.control_cluster import ControlCluster
from tests.support.servers import ProcessGroup, wait_until


class Recorded:
    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, amount: float) -> None:
        self.values.append(amount)


class Scheduler:
    """Seconds run and waited, as /proc/thread-self/schedstat would say them."""

    def __init__(self) -> None:
        self.ran = 0.0
        self.waited = 0.0
        self.known = True

    def read(self) -> tuple[float, float] | None:
        return (self.ran, self.waited) if self.known else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ringleader.raft"]


def lateness() -> tuple[TickLateness, Recorded, Scheduler, Clock]:
    histogram, scheduler, clock = Recorded(), Scheduler(), Clock()
    return TickLateness(histogram, clock, scheduler.read), histogram, scheduler, clock


def test_every_tick_is_observed_and_a_punctual_one_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks, histogram, _, _ = lateness()
    with caplog.at_level(logging.WARNING):
        for late in (0.0, 0.004, WARN_AFTER / 2):
            ticks.ticked(late)
    assert histogram.values == [0.0, 0.004, WARN_AFTER / 2]
    assert warnings(caplog) == []


@pytest.mark.parametrize(
    ("ran", "waited", "says"),
    [
        (0.08, 0.17, "the host is short of CPU"),
        (0.2, 0.05, "this node's own work held it"),
        (0.01, 0.01, "stopped or paused, or blocked in a system call"),
    ],
)
def test_a_stall_is_logged_with_what_the_thread_did_meanwhile(
    caplog: pytest.LogCaptureFixture, ran: float, waited: float, says: str
) -> None:
    ticks, _, scheduler, _ = lateness()
    scheduler.ran, scheduler.waited = ran, waited
    with caplog.at_level(logging.WARNING):
        ticks.ticked(0.25)
    (record,) = warnings(caplog)
    assert record.getMessage().startswith("event loop stood still for 250 ms")
    assert says in record.getMessage()
    assert record.ctx == {  # type: ignore[attr-defined]
        "late_s": 0.25, "unwarned": 0, "ran_s": ran, "waited_for_cpu_s": waited,
    }  # fmt: skip


def test_without_scheduler_statistics_the_stall_is_still_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks, _, scheduler, _ = lateness()
    scheduler.known = False
    with caplog.at_level(logging.WARNING):
        ticks.ticked(0.3)
    (record,) = warnings(caplog)
    assert record.getMessage() == "event loop stood still for 300 ms, so heartbeats were late"


def test_stalls_are_logged_at_most_once_per_window_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks, histogram, _, clock = lateness()
    with caplog.at_level(logging.WARNING):
        ticks.ticked(0.2)
        for _ in range(3):
            clock.now += WARN_EVERY / 4
            ticks.ticked(0.2)
        clock.now += WARN_EVERY / 4
        ticks.ticked(0.2)
    logged = warnings(caplog)
    assert len(logged) == 2
    assert logged[1].ctx["unwarned"] == 3  # type: ignore[attr-defined]
    assert len(histogram.values) == 5


def test_this_threads_schedstat_is_read_and_grows_with_its_work(tmp_path: Path) -> None:
    first = read_schedstat()
    assert first is not None, "no /proc/thread-self/schedstat on this Linux"
    total = 0
    for i in range(200_000):
        total += i * i
    second = read_schedstat()
    assert second is not None
    assert second[0] > first[0]
    # Another thread reads its own numbers, not this one's.
    other: list[tuple[float, float] | None] = []
    thread = threading.Thread(target=lambda: other.append(read_schedstat()))
    thread.start()
    thread.join()
    assert other[0] is not None
    assert other[0][0] < second[0]
    unreadable = tmp_path / "schedstat"
    assert read_schedstat(unreadable) is None
    unreadable.write_text("not numbers\n")
    assert read_schedstat(unreadable) is None


def test_a_stopped_node_logs_its_stall_and_counts_it(tmp_path: Path, procs: ProcessGroup) -> None:
    cluster = ControlCluster(procs, tmp_path / "single", size=1)
    try:
        cluster.start()
        process = cluster.nodes[1].process
        assert process is not None

        def over(seconds: str) -> float:
            bucket = "ringleader_control_tick_lateness_seconds_bucket"
            return cluster.metric(1, bucket, {"le": "+Inf"}) - cluster.metric(
                1, bucket, {"le": seconds}
            )

        def stalls() -> list[dict[str, object]]:
            lines = process.log_path.read_text().splitlines()
            return [json.loads(line) for line in lines if "event loop stood still" in line]

        # A stall of start-up, if any, opened a window in which the next is only counted.
        started = time.monotonic()
        if stalls():
            wait_until(lambda: time.monotonic() - started > WARN_EVERY, WARN_EVERY + 5,
                       "the start-up stall's warning window to close")  # fmt: skip
        before, logged = over("0.2"), len(stalls())
        cluster.stop(1)
        time.sleep(0.5)  # the stall under test: the node is stopped, nothing to poll
        cluster.cont(1)
        wait_until(lambda: over("0.2") > before, 10, "a tick over 0.2 s late to be counted")
        wait_until(lambda: len(stalls()) > logged, 10, "the stall to be logged")
        line = stalls()[logged]
        assert "stopped or paused" in str(line["msg"]), line
        assert float(str(line["late_s"])) >= 0.4
    finally:
        cluster.close()
