"""Kernel AIO fdatasync with real files: completions on the loop, errors, and a flush that
takes its time while the loop serves on."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from control.aio_sync import AioSync

DEADLINE = 30.0


async def flushed(sync: AioSync, fd: int) -> OSError | None:
    """Submits an fdatasync of `fd` and waits for its completion, which must run on the
    loop's thread."""
    future: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()

    def done(error: OSError | None) -> None:
        assert threading.current_thread() is threading.main_thread()
        future.set_result(error)

    sync.fdatasync(fd, done)
    async with asyncio.timeout(DEADLINE):
        return await future


def test_a_flush_completes_on_the_loop(tmp_path: Path) -> None:
    async def scenario() -> list[OSError | None]:
        sync = AioSync.open(str(tmp_path))
        fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
        try:
            results = []
            for i in range(3):
                os.pwrite(fd, b"record %d\n" % i, 9 * i)
                results.append(await flushed(sync, fd))
            return results
        finally:
            os.close(fd)
            sync.close()

    assert asyncio.run(scenario()) == [None, None, None]
    assert (tmp_path / "log").read_bytes() == b"record 0\nrecord 1\nrecord 2\n"


def test_the_loop_serves_while_a_flush_is_in_flight(tmp_path: Path) -> None:
    """io_submit only queues the flush: a flush of much dirty data outlasts its submission
    many times over, and the loop turns meanwhile."""
    dirty = b"\xa5" * (64 << 20)

    async def scenario() -> tuple[float, float, int]:
        sync = AioSync.open(str(tmp_path))
        fd = os.open(tmp_path / "big", os.O_WRONLY | os.O_CREAT)
        turns = 0

        async def turning() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        try:
            assert await flushed(sync, fd) is None  # a warm start for the timed submission
            for offset in range(0, 4 * len(dirty), len(dirty)):
                os.pwrite(fd, dirty, offset)
            ticker = asyncio.create_task(turning())
            future: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()
            started = time.perf_counter()
            sync.fdatasync(fd, future.set_result)
            submitted = time.perf_counter() - started
            async with asyncio.timeout(DEADLINE):
                assert await future is None
            ticker.cancel()
            return submitted, time.perf_counter() - started, turns
        finally:
            os.close(fd)
            sync.close()

    submitted, flushed_after, turns = asyncio.run(scenario())
    print(f"submit {submitted * 1e3:.2f} ms, flush {flushed_after * 1e3:.1f} ms, {turns} turns")
    assert flushed_after > 10 * submitted
    assert turns > 100


def test_a_flush_the_kernel_refuses_raises_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        sync = AioSync.open(str(tmp_path))
        fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
        os.close(fd)
        try:
            with pytest.raises(OSError, match="io_submit: Bad file descriptor"):
                sync.fdatasync(fd, lambda error: None)
        finally:
            sync.close()

    asyncio.run(scenario())


def test_open_needs_a_directory_it_can_flush(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(FileNotFoundError):
            AioSync.open(str(tmp_path / "missing"))

    asyncio.run(scenario())
