"""Peer RPC over HTTP: one long-lived streaming POST to `/raft/messages` on each peer.

Wire format: the request body is a sequence of frames, each a JSON array of encoded
messages followed by a newline; an empty line is a keepalive. A short POST carrying one
frame is a valid stream too. Streaming costs one HTTP request per connection instead of
one per batch: replicating a write to a follower and hearing back was four HTTP requests
and is now two chunk writes, which is most of a write's cost in Python.

Delivery is best effort, as Raft assumes: a full queue or a broken stream drops messages,
and the core retransmits. One sender per peer keeps each peer's messages in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx

from control.metrics import ControlMetrics
from control.raft.codec import CodecError, decode_message, encode_message
from control.raft.messages import Message
from control.raft.types import NodeId
from control.token import bearer

log = logging.getLogger("ringleader.transport")

PEER_PATH = "/raft/messages"
QUEUE_LIMIT = 4096
BATCH_LIMIT = 256
# Snapshots travel inside a frame; anything larger is a broken or hostile peer.
MAX_FRAME_BYTES = 64 << 20
# An idle stream sends a keepalive this often, so a peer that went away is noticed on the
# next write (a write to a closed connection fails) even when Raft has nothing to say.
KEEPALIVE_SECONDS = 0.1
# Below the election timeout, so a dead peer cannot hold up its sender for long.
CONNECT_TIMEOUT = 0.15
# A write blocks only once the socket buffer is full: the peer stopped reading.
WRITE_TIMEOUT = 1.0
# A stream that lasted this long was working; its end starts a fresh failure count.
HEALTHY_STREAM_SECONDS = 1.0


class FrameError(ValueError):
    """A peer sent bytes that are not a stream of message frames."""


class FrameReader:
    """Splits a peer's byte stream into decoded message batches."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> Iterator[list[Message]]:
        head, newline, rest = data.partition(b"\n")
        self._pending += head
        if not newline:
            if len(self._pending) > MAX_FRAME_BYTES:
                raise FrameError(f"frame over {MAX_FRAME_BYTES} bytes")
            return
        *frames, tail = rest.split(b"\n")
        frames.insert(0, bytes(self._pending))
        self._pending = bytearray(tail)
        for frame in frames:
            if frame:
                yield _decode(frame)

    def end(self) -> Iterator[list[Message]]:
        """The last frame, which a one-shot POST need not end with a newline."""
        frame, self._pending = bytes(self._pending), bytearray()
        if frame.strip():
            yield _decode(frame)


def _decode(frame: bytes) -> list[Message]:
    try:
        batch = json.loads(frame)
        if not isinstance(batch, list):
            raise FrameError("a frame is a JSON array of messages")
        return [decode_message(m) for m in batch]
    except (ValueError, TypeError, CodecError) as exc:
        raise FrameError(f"undecodable peer message: {exc}"[:300]) from None


class HttpTransport:
    def __init__(self, peers: dict[NodeId, str], token: str, metrics: ControlMetrics) -> None:
        self._peers = peers
        self._metrics = metrics
        self._http = httpx.AsyncClient(
            headers={**bearer(token), "content-type": "application/x-ndjson"},
            timeout=httpx.Timeout(WRITE_TIMEOUT, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=len(peers)),
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
        loop = asyncio.get_running_loop()
        queue = self._queues[peer]
        url = self._peers[peer] + PEER_PATH
        failures = 0
        while True:
            opened = loop.time()
            try:
                # A one-shot POST first: a refusal (a wrong token) comes back as a status,
                # which a stream cannot show (its answer is read only after the body ends,
                # and a refusing peer closes the connection instead).
                hello = await self._http.post(url, content=b"[]")
                if hello.status_code != 204:
                    problem = f"peer refused: {hello.status_code} {hello.text[:200]}"
                else:
                    ended = await self._http.post(url, content=_frames(queue))
                    problem = f"peer ended the stream: {ended.status_code} {ended.text[:200]}"
            except httpx.HTTPError as exc:
                problem = repr(exc)
            if loop.time() - opened >= HEALTHY_STREAM_SECONDS:
                failures = 0
            failures += 1
            self._metrics.peer_send_failures.labels(str(peer)).inc()
            if failures == 1 or failures % 100 == 0:
                log.warning(
                    "cannot stream to peer %s", peer,
                    extra={"ctx": {"peer": peer, "url": url, "error": problem,
                                   "failures": failures}},
                )  # fmt: skip
            # The core retransmits what matters: drop the backlog rather than deliver a
            # burst of stale messages later, and don't spin against a dead peer.
            while not queue.empty():
                queue.get_nowait()
            await asyncio.sleep(min(0.05 * (failures - 1), 0.2))

    async def close(self) -> None:
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        await self._http.aclose()


async def _frames(queue: asyncio.Queue[Message]) -> AsyncIterator[bytes]:
    """The body of one stream: whatever is queued, batched, as it arrives."""
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                batch = [await queue.get()]
        except TimeoutError:
            yield b"\n"
            continue
        while len(batch) < BATCH_LIMIT and not queue.empty():
            batch.append(queue.get_nowait())
        body = json.dumps([encode_message(m) for m in batch], separators=(",", ":"))
        yield body.encode() + b"\n"
