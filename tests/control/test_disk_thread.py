"""The Raft driver's disk thread: order, errors, cancellation, and a loop that serves on."""

from __future__ import annotations

import asyncio
import threading

import pytest

from control.disk_thread import DiskThread

DEADLINE = 10.0


class Gate:
    """A write that holds the disk thread until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def write(self) -> None:
        self.opened.wait(DEADLINE)


def test_writes_run_in_order_on_a_thread_other_than_the_loops() -> None:
    ran: list[tuple[int, str]] = []

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        try:
            for i in range(5):
                await disk.run(lambda i=i: ran.append((i, threading.current_thread().name)))
        finally:
            disk.stop()

    asyncio.run(scenario())
    assert ran == [(i, "test-disk") for i in range(5)]


def test_a_failed_write_raises_in_the_awaiting_task_and_later_writes_still_run() -> None:
    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    async def scenario() -> list[str]:
        disk = DiskThread("test-disk")
        done: list[str] = []
        try:
            with pytest.raises(OSError, match="No space left"):
                await disk.run(full_disk)
            await disk.run(lambda: done.append("next"))
        finally:
            disk.stop()
        return done

    assert asyncio.run(scenario()) == ["next"]


def test_the_loop_serves_while_a_write_blocks() -> None:
    gate = Gate()

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        try:
            write = asyncio.create_task(disk.run(gate.write))
            # The loop runs other work while the write holds the thread; it ends the write.
            for _ in range(10):
                await asyncio.sleep(0.001)
            assert not write.done()
            gate.opened.set()
            async with asyncio.timeout(DEADLINE):
                await write
        finally:
            disk.stop()

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_thread_working() -> None:
    gate = Gate()
    ran: list[str] = []

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        try:
            slow = asyncio.create_task(disk.run(gate.write))
            await asyncio.sleep(0.01)
            slow.cancel()
            gate.opened.set()
            async with asyncio.timeout(DEADLINE):
                await disk.run(lambda: ran.append("after"))
            assert slow.cancelled()
        finally:
            disk.stop()

    asyncio.run(scenario())
    assert ran == ["after"]


def test_stop_lets_the_write_in_progress_finish() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow_write() -> None:
        started.set()
        release.wait(DEADLINE)
        finished.append("written")

    async def scenario() -> None:
        disk = DiskThread("test-disk")
        task = asyncio.create_task(disk.run(slow_write))
        await asyncio.to_thread(started.wait, DEADLINE)
        threading.Timer(0.05, release.set).start()
        disk.stop()
        assert finished == ["written"]
        await task

    asyncio.run(scenario())
