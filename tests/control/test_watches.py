"""WatchHub: one check of the node wakes every waiting ring watch, and only on a change a
watch may answer on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from control.registry import Registry
from control.watches import WatchHub


class FakeNode:
    """What WatchHub uses of a RaftNode: catching_up() and wait_for_change()."""

    def __init__(self) -> None:
        self.behind: str | None = None
        self.checks = 0
        self._changed = asyncio.Event()

    def catching_up(self) -> str | None:
        self.checks += 1
        return self.behind

    async def wait_for_change(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def hub_scenario(check_every: float) -> tuple[list[float], int]:
    """Three waits of 100 watches each: one woken by an apply, one by the node falling
    behind with nothing applied, and one that times out. Seconds each took, and how often
    the hub asked the node whether it is caught up."""

    async def main() -> tuple[list[float], int]:
        node = FakeNode()
        registry = Registry()
        hub = WatchHub(node, registry, check_every)  # type: ignore[arg-type]
        took = []

        async def wave(change: Callable[[], None] | None, within: float) -> None:
            started = time.monotonic()
            waiting = [asyncio.create_task(hub.wait(within)) for _ in range(100)]
            await asyncio.sleep(0.05)  # pacing: the watches wait before the change
            if change is not None:
                change()
            await asyncio.gather(*waiting)
            took.append(time.monotonic() - started)

        def apply() -> None:
            registry.skip(registry.applied_index + 1)
            node.notify()

        def fall_behind() -> None:
            node.behind = "no known leader"

        try:
            await wave(apply, within=30.0)
            await wave(fall_behind, within=30.0)
            await wave(None, within=0.3)
        finally:
            await hub.close()
        return took, node.checks

    return asyncio.run(main())


def test_watches_wake_on_an_apply_and_on_falling_behind_and_else_time_out() -> None:
    check_every = 0.2
    (applied, behind, quiet), checks = hub_scenario(check_every)
    assert applied < 5.0
    assert behind < 5.0
    assert 0.3 <= quiet < 5.0
    # One check per period and per change for all 300 watches, not one per watch.
    assert checks < 100
