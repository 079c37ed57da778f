"""The Raft driver's disk thread: order, errors, completions on the loop, and stopping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from control.disk_thread import DiskThread

DEADLINE = 10.0


def written(disk: DiskThread, write: Callable[[], None]) -> asyncio.Future[None]:
    """Submits `write`; the future settles in the completion callback, so the test also sees
    on which thread that ran."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def done(error: Exception | None) -> None:
        assert threading.current_thread() is threading.main_thread()
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    disk.submit(write, done)
    return future


def test_writes_run_in_order_on_a_thread_other_than_the_loops() -> None:
    ran: list[tuple[int, str]] = []

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        try:
            futures = [
                written(disk, lambda i=i: ran.append((i, threading.current_thread().name)))
                for i in range(5)
            ]
            async with asyncio.timeout(DEADLINE):
                await asyncio.gather(*futures)
        finally:
            disk.stop()

    asyncio.run(scenario())
    assert ran == [(i, "test-disk") for i in range(5)]


def test_a_failed_write_reaches_its_callback_and_later_writes_still_run() -> None:
    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    async def scenario() -> list[str]:
        disk = DiskThread("test-disk")
        done: list[str] = []
        try:
            async with asyncio.timeout(DEADLINE):
                with pytest.raises(OSError, match="No space left"):
                    await written(disk, full_disk)
                await written(disk, lambda: done.append("next"))
        finally:
            disk.stop()
        return done

    assert asyncio.run(scenario()) == ["next"]


def test_the_loop_serves_while_a_write_blocks() -> None:
    opened = threading.Event()

    def blocked_write() -> None:
        opened.wait(DEADLINE)

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        try:
            write = written(disk, blocked_write)
            # The loop runs other work while the write holds the thread; it ends the write.
            for _ in range(10):
                await asyncio.sleep(0.001)
            assert not write.done()
            opened.set()
            async with asyncio.timeout(DEADLINE):
                await write
        finally:
            disk.stop()

    asyncio.run(scenario())


def test_stop_lets_the_write_in_progress_finish() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow_write() -> None:
        started.set()
        release.wait(DEADLINE)
        finished.append("written")

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        write = written(disk, slow_write)
        await asyncio.to_thread(started.wait, DEADLINE)
        threading.Timer(0.05, release.set).start()
        disk.stop()
        assert finished == ["written"]
        async with asyncio.timeout(DEADLINE):
            await write

    asyncio.run(scenario())


def test_a_completion_after_the_loop_closed_is_dropped() -> None:
    """A write that outlives its loop (a stop that timed out) must not crash the thread."""
    started, release = threading.Event(), threading.Event()
    calls: list[Exception | None] = []

    def slow_write() -> None:
        started.set()
        release.wait(DEADLINE)

    async def scenario() -> DiskThread:
        disk = DiskThread("test-disk-outlived")
        disk.submit(slow_write, calls.append)
        await asyncio.to_thread(started.wait, DEADLINE)
        return disk

    disk = asyncio.run(scenario())
    release.set()
    disk.stop()
    assert calls == []
    assert "test-disk-outlived" not in {t.name for t in threading.enumerate()}
