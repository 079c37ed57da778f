"""Wakes the ring watches that wait on this node: one check of the node for all of them.

A watch answers when its pool's epoch passes the one it holds, or at once with a 503 when
this node stops being caught up with a leader (control.api). Were each to wait on the node
and re-check it every LEADER_CHECK_SECONDS, N watches would cost N wake-ups per period even
when nothing changed. One task waits on the node instead, and wakes every watch only when
something a watch answers on changed: an entry was applied, or the node's being caught up
flipped (which time alone can do: a stalled disk, an apply lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from control.node import RaftNode
from control.registry import Outcome, Registry


class WatchHub:
    def __init__(self, node: RaftNode[Outcome], registry: Registry, check_every: float) -> None:
        self._node = node
        self._registry = registry
        self._check_every = check_every
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wait(self, within: float) -> None:
        """Returns after the next change a watch may answer on, or after `within` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ring-watches")
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await changed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _state(self) -> tuple[int, bool]:
        return self._registry.applied_index, self._node.catching_up() is None

    def _differs(self, seen: tuple[int, bool]) -> bool:
        return self._state() != seen

    async def _run(self) -> None:
        while True:
            seen = self._state()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_every):
                    await self._node.wait_for_change(functools.partial(self._differs, seen))
            if self._differs(seen):
                # Waiters hold the old event, which wakes them all; later ones get a new one.
                self._changed.set()
                self._changed = asyncio.Event()
