"""Peer RPC over HTTP: messages are POSTed in batches to `/raft/messages` on each peer.

Delivery is best effort, as Raft assumes: a full queue or a failed POST drops messages, and
the core retransmits. One sender per peer keeps each peer's messages in order.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from control.metrics import ControlMetrics
from control.raft.codec import encode_message
from control.raft.messages import Message
from control.raft.types import NodeId
from control.token import bearer

log = logging.getLogger("ringleader.transport")

PEER_PATH = "/raft/messages"
QUEUE_LIMIT = 4096
BATCH_LIMIT = 256
# Below the election timeout, so a dead peer's requests cannot pile up behind each other.
SEND_TIMEOUT = 0.15


class HttpTransport:
    def __init__(self, peers: dict[NodeId, str], token: str, metrics: ControlMetrics) -> None:
        self._peers = peers
        self._metrics = metrics
        self._http = httpx.AsyncClient(
            headers={**bearer(token), "content-type": "application/json"},
            timeout=httpx.Timeout(SEND_TIMEOUT),
            limits=httpx.Limits(max_keepalive_connections=len(peers) * 2),
        )
        self._queues: dict[NodeId, asyncio.Queue[Message]] = {
            peer: asyncio.Queue(QUEUE_LIMIT) for peer in peers
        }
        self._senders: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._senders = [
            asyncio.create_task(self._sender(peer), name=f"raft-send-{peer}")
            for peer in self._peers
        ]

    def send(self, messages: tuple[Message, ...]) -> None:
        for m in messages:
            queue = self._queues.get(m.to)
            if queue is None:
                continue
            try:
                queue.put_nowait(m)
            except asyncio.QueueFull:
                self._metrics.peer_send_failures.labels(str(m.to)).inc()

    async def _sender(self, peer: NodeId) -> None:
        queue = self._queues[peer]
        url = self._peers[peer] + PEER_PATH
        failures = 0
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH_LIMIT and not queue.empty():
                batch.append(queue.get_nowait())
            body = json.dumps([encode_message(m) for m in batch], separators=(",", ":"))
            try:
                response = await self._http.post(url, content=body)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self._metrics.peer_send_failures.labels(str(peer)).inc()
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    log.warning(
                        "cannot reach peer %s", peer,
                        extra={"ctx": {"peer": peer, "url": url, "error": repr(exc),
                                       "failures": failures}},
                    )  # fmt: skip
                # The core retransmits what matters: drop the backlog rather than deliver a
                # burst of stale messages later, and don't spin against a dead peer.
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.sleep(min(0.05 * failures, 0.2))
            else:
                if failures:
                    log.info("peer %s reachable again", peer, extra={"ctx": {"peer": peer}})
                failures = 0

    async def close(self) -> None:
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        await self._http.aclose()
