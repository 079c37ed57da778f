"""A thread of its own for the Raft driver's disk writes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable

# How long stopping waits for a write in progress; past it, the process may exit mid-write,
# which Raft treats as the crash it tolerates anyway.
STOP_TIMEOUT = 5.0

HOLD_WRITES_ENV = "RINGLEADER_FAULT_HOLD_WRITES_WHILE"
"""Fault injection for tests, and nothing else: while the file this variable names exists,
each write on the disk thread waits before it starts, as on a hung disk."""
HOLD_POLL_SECONDS = 0.01

_Job = tuple[asyncio.AbstractEventLoop, Callable[[Exception | None], None], Callable[[], None]]


class DiskThread:
    """Runs blocking writes one at a time on a dedicated thread, so the event loop keeps
    serving (heartbeats above all) while an fsync takes its time.

    Each write costs one queue put and one `call_soon_threadsafe`, against asyncio.to_thread's
    context copy, executor work item, concurrent future and their locks. Every write waits on
    this hand-off twice; at one write in flight the leaner one takes 4% off each write's time
    (BENCHMARKS.md, control plane).
    """

    def __init__(self, name: str) -> None:
        self.hold_file = os.environ.get(HOLD_WRITES_ENV) or None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], None], done: Callable[[Exception | None], None]) -> None:
        """Runs `write` on the thread, then `done` on the calling event loop with what
        `write` raised, or None."""
        self._jobs.put((asyncio.get_running_loop(), done, write))

    def stop(self) -> None:
        """Lets the write in progress, if any, finish, then ends the thread."""
        self._jobs.put(None)
        self._thread.join(STOP_TIMEOUT)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, done, write = job
            error: Exception | None = None
            while self.hold_file is not None and os.path.exists(self.hold_file):
                time.sleep(HOLD_POLL_SECONDS)
            try:
                write()
            except Exception as exc:
                error = exc
            # A closed loop raises here: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done, error)
