"""The ring watch: a long-poll on the control plane that yields each newer ring.

Static stability (docs/invariants.md, invariant 5): when the control plane is unreachable the proxy
keeps the last ring it has and retries every control URL with jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from urllib.parse import quote

from proxy.router import RingState
from proxy.telemetry import GaugeChild
from ringleader.backend_url import BackendURLError, parse_backend_url
from ringleader.control_client import ControlClient, ControlError

log = logging.getLogger("ringleader.watch")

WATCH_SECONDS = 25.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


def ring_state(body: object) -> RingState:
    """A RingState from the control plane's ring JSON; ValueError if malformed."""
    if not isinstance(body, dict):
        raise ValueError("ring is not a JSON object")
    try:
        backends = tuple(parse_backend_url(str(b["url"])) for b in body["backends"])
        active = body.get("active", [])
        owners = (
            tuple(parse_backend_url(str(b["url"])) for b in active)
            if any(b["health"] != "up" for b in active)
            else ()
        )
        return RingState(int(body["epoch"]), str(body["hash"]), backends, owners)
    except (KeyError, TypeError, BackendURLError) as exc:
        raise ValueError(f"malformed ring: {exc}") from None


class RingWatcher:
    def __init__(
        self, urls: list[str], pool: str, on_ring: Callable[[RingState], None],
        control_up: GaugeChild, rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self._client = ControlClient(urls, deadline=0.0)
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
                state = ring_state(reply.body)
            except (ControlError, ValueError) as exc:
                if self.last_error is None:
                    log.warning(
                        "ring watch failing; keeping the last ring",
                        extra={"ctx": {"error": str(exc), "epoch": self.epoch}},
                    )
                self.last_error = str(exc)
                self._control_up.set(0.0)
                # Full jitter: proxies restarted together must not retry in lockstep.
                await asyncio.sleep(self._rng.uniform(0, backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)
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
