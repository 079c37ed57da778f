"""The ring watch: a long-poll on the control plane that yields each newer ring.

Static stability (docs/invariants.md, invariant 5): when the control plane is unreachable the proxy
keeps the last ring it has and retries every control URL with jittered backoff, kept short
while the nodes answer but have no leader (an election).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from urllib.parse import quote

import httpx

from proxy.router import RingState
from proxy.telemetry import GaugeChild
from ringleader.control_client import RETRYABLE_STATUS, ControlClient, ControlError
from ringleader.wire import RingDocument, WireError

log = logging.getLogger("ringleader.watch")

WATCH_SECONDS = 25.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# While a node answers, only without a leader for now (an election, a node catching up),
# retries stay this close: an election ends within a second or so, and a watch backed off
# for seconds would see the ring committed after it that much late. Answers cost a node
# little; a plane that does not answer at all gets the full backoff.
ANSWERED_BACKOFF_MAX = 1.0


def ring_state(document: RingDocument) -> RingState:
    """What the proxy routes with, from the control plane's ring document."""
    owners = (
        tuple(b.spec() for b in document.active)
        if any(b.health != "up" for b in document.active)
        else ()
    )
    return RingState(
        document.epoch, document.hash, tuple(b.spec() for b in document.backends), owners
    )


class RingWatcher:
    def __init__(
        self, urls: list[str], pool: str, on_ring: Callable[[RingState], None],
        control_up: GaugeChild, rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None, spread_by: str | None = None,
    ) -> None:  # fmt: skip
        """`spread_by`, the proxy's identity, starts the watch at a node picked by its hash
        rather than at the first URL, so a fleet's watches spread over the control nodes
        (any caught-up node serves them) instead of all landing on one."""
        self._client = ControlClient(urls, deadline=0.0, transport=transport, spread_by=spread_by)
        self._path = f"/v1/pools/{quote(pool, safe='')}/ring"
        self._on_ring = on_ring
        self._control_up = control_up
        self._rng = rng or random.Random()
        self.epoch = -1
        self.last_error: str | None = None
        self.received_first = asyncio.Event()

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            try:
                # After a failure, ask without waiting: the first answer both brings any
                # ring committed meanwhile and tells at once that the plane is back.
                wait = 0.0 if self.last_error is not None else WATCH_SECONDS
                reply = await self._client.request(
                    "GET", self._path,
                    params={"wait_epoch": self.epoch, "timeout": wait},
                    read_timeout=wait + 5,
                )  # fmt: skip
                state = ring_state(RingDocument.from_json(reply.body))
            except (ControlError, WireError) as exc:
                if self.last_error is None:
                    log.warning(
                        "ring watch failing; keeping the last ring",
                        extra={"ctx": {"error": str(exc), "epoch": self.epoch}},
                    )
                self.last_error = str(exc)
                self._control_up.set(0.0)
                answered = isinstance(exc, ControlError) and exc.status in RETRYABLE_STATUS
                cap = ANSWERED_BACKOFF_MAX if answered else BACKOFF_MAX
                backoff = min(backoff, cap)
                # Full jitter: proxies restarted together must not retry in lockstep.
                await asyncio.sleep(self._rng.uniform(0, backoff))
                backoff = min(backoff * 2, cap)
                continue
            if self.last_error is not None:
                log.info("ring watch recovered", extra={"ctx": {"via": reply.url}})
            self.last_error = None
            self._control_up.set(1.0)
            backoff = BACKOFF_MIN
            if state.epoch > self.epoch:
                self.epoch = state.epoch
                self._on_ring(state)
            self.received_first.set()

    async def close(self) -> None:
        await self._client.close()
