"""Peer RPC over HTTP: one long-lived streaming POST to `/raft/messages` on each peer.

Wire format: the request body is a sequence of frames, each a JSON array of encoded
messages followed by a newline; an empty line is a keepalive. A short POST carrying one
frame is a valid stream too. Streaming costs one HTTP request per connection instead of
one per batch: replicating a write to a follower and hearing back was four HTTP requests
and is now two chunk writes, which is most of a write's cost in Python.

The sending side writes each batch to the socket as the driver hands it over, instead of
queueing it for a sender task: at one write in flight, that task hop, httpx's streaming
layers and the queue cost about 0.1 ms of the leader's CPU per write, on the path every
acknowledgement waits for (BENCHMARKS.md, control plane).

Delivery is best effort, as Raft assumes: messages for a peer with no open stream, or one
that stopped reading, are dropped, and the core retransmits. Each peer's messages go down
one connection, so they arrive in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import h11

from control.metrics import ControlMetrics
from control.raft.codec import CodecError, decode_message, encode_message
from control.raft.messages import Message
from control.raft.types import NodeId
from ringleader.token import bearer

log = logging.getLogger("ringleader.transport")

PEER_PATH = "/raft/messages"
# Snapshots travel inside a frame; anything larger is a broken or hostile peer.
MAX_FRAME_BYTES = 64 << 20
# An idle stream sends a keepalive this often, so a peer that went away is noticed on the
# next write (a write to a closed connection fails) even when Raft has nothing to say.
KEEPALIVE_SECONDS = 0.1
# Below the election timeout, so a dead peer cannot hold up its sender for long.
CONNECT_TIMEOUT = 0.15
# A peer whose socket buffer stayed full this long stopped reading; its stream is dropped.
WRITE_TIMEOUT = 1.0
# The handshake's answer comes from a live node at once.
ANSWER_TIMEOUT = 1.0
# A stream that lasted this long was working; its end starts a fresh failure count.
HEALTHY_STREAM_SECONDS = 1.0
# Enough of a peer's answer to say why it ended a stream.
ANSWER_EXCERPT = 200


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


def _frame(batch: list[Message]) -> bytes:
    return json.dumps([encode_message(m) for m in batch], separators=(",", ":")).encode() + b"\n"


def _decode(frame: bytes) -> list[Message]:
    try:
        batch = json.loads(frame)
        if not isinstance(batch, list):
            raise FrameError("a frame is a JSON array of messages")
        return [decode_message(m) for m in batch]
    except (ValueError, TypeError, CodecError) as exc:
        raise FrameError(f"undecodable peer message: {exc}"[:300]) from None


class StreamEnded(Exception):
    """A peer stream can carry no more messages; the text says why, for the log."""


class PeerConnection(asyncio.Protocol):
    """One connection to a peer's `/raft/messages`, spoken through h11.

    First a one-shot POST of an empty batch, whose status shows a refusal (a wrong token),
    which a stream cannot: its answer arrives only when the peer ends it. Then one chunked
    POST that stays open, written to frame by frame. Any answer ends the stream.
    """

    def __init__(self, target: str, headers: list[tuple[str, str]]) -> None:
        self._target = target
        self._headers = headers
        self._h11 = h11.Connection(h11.CLIENT)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._status = 0
        self._body = bytearray()
        # Set once the connection is gone, so an answer awaited later fails at once.
        self._lost: StreamEnded | None = None
        self.stalled_since: float | None = None
        self.last_write = time.monotonic()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._h11.receive_data(data)
        try:
            while not self._answer.done():
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Response):
                    self._status = event.status_code
                elif isinstance(event, h11.Data):
                    self._body += event.data[: ANSWER_EXCERPT - len(self._body)]
                elif isinstance(event, h11.EndOfMessage):
                    self._answer.set_result((self._status, bytes(self._body)))
                elif isinstance(event, h11.ConnectionClosed):
                    self._fail(StreamEnded("peer closed the connection"))
        except h11.RemoteProtocolError as exc:
            if data:
                self._fail(StreamEnded(f"peer answered with malformed HTTP: {exc}"))
            else:
                self._fail(StreamEnded("peer closed the connection mid-answer"))

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = StreamEnded(f"connection lost: {exc!r}" if exc else "connection closed")
        self._fail(self._lost)

    def pause_writing(self) -> None:
        self.stalled_since = time.monotonic()

    def resume_writing(self) -> None:
        self.stalled_since = None

    # -- use ---------------------------------------------------------------------------------

    async def handshake(self, authority: str) -> None:
        """The one-shot POST; raises StreamEnded unless the peer accepts (204)."""
        self._send(h11.Request(method="POST", target=self._target, headers=[
            ("host", authority), ("content-length", "2"), *self._headers]))  # fmt: skip
        self._send(h11.Data(data=b"[]"))
        self._send(h11.EndOfMessage())
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                status, body = await asyncio.shield(self._answer)
        except TimeoutError:
            raise StreamEnded(f"no answer in {ANSWER_TIMEOUT}s") from None
        if status != 204:
            raise StreamEnded(f"peer refused: {status} {body.decode(errors='replace')}")
        self._h11.start_next_cycle()
        self._answer = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            raise self._lost
        self._send(h11.Request(method="POST", target=self._target, headers=[
            ("host", authority), ("transfer-encoding", "chunked"), *self._headers]))  # fmt: skip

    @property
    def accepting(self) -> bool:
        """Whether frames written now would go out: not ended, not stalled."""
        return not self._answer.done() and self.stalled_since is None

    def write(self, frame: bytes) -> bool:
        """Writes one frame; False, dropping it, unless the stream is `accepting`."""
        transport = self._open_transport()
        if not self.accepting or transport is None:
            return False
        # One chunk per frame (RFC 9112 7.1), framed here: h11's event machinery for a
        # chunk costs more than the socket write it precedes, on every message.
        transport.write(b"%x\r\n%b\r\n" % (len(frame), frame))
        self.last_write = time.monotonic()
        return True

    async def end(self) -> str:
        """Waits for the stream to end; returns why it did."""
        try:
            status, body = await asyncio.shield(self._answer)
        except StreamEnded as exc:
            return str(exc)
        return f"peer ended the stream: {status} {body.decode(errors='replace')}"

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _send(self, event: h11.Event) -> bool:
        """False, sending nothing, once the connection is closing."""
        transport = self._open_transport()
        if transport is None:
            return False
        data = self._h11.send(event)
        if data:
            transport.write(data)
        return True

    def _open_transport(self) -> asyncio.Transport | None:
        """The transport, unless it is closing: writing to a closed uvloop transport
        raises, and connection_lost will say why it closed."""
        if self._transport is None or self._transport.is_closing():
            return None
        return self._transport

    def _fail(self, reason: StreamEnded) -> None:
        if not self._answer.done():
            self._answer.set_exception(reason)
            # Retrieved or not, an ended stream is routine: keep asyncio from logging it.
            self._answer.exception()


@dataclass(frozen=True, slots=True)
class PeerAddress:
    host: str
    port: int
    authority: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> PeerAddress:
        """Raises ValueError for a URL without a host or with a malformed port."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        return cls(parts.hostname, parts.port or (443 if tls else 80), parts.netloc, tls)


class HttpTransport:
    """Sends Raft messages to peers, one stream per peer, each kept open by its own task."""

    def __init__(self, peers: dict[NodeId, str], token: str, metrics: ControlMetrics) -> None:
        self._peers: dict[NodeId, str] = {}
        self._addresses: dict[NodeId, PeerAddress] = {}
        self._metrics = metrics
        self._headers = [(k, v) for k, v in bearer(token).items()]
        self._headers.append(("content-type", "application/x-ndjson"))
        self._streams: dict[NodeId, PeerConnection] = {}
        self._senders: dict[NodeId, asyncio.Task[None]] = {}
        self._started = False
        self.update_peers(peers, ())

    def start(self) -> None:
        self._started = True
        for peer in self._peers:
            self._start_sender(peer)

    def update_peers(self, peers: Mapping[NodeId, str], removed: Iterable[NodeId]) -> None:
        """Streams to every peer in `peers` from now on, and stops streaming to `removed`.

        Peers are only added otherwise: an ID keeps its URL for good and is never reused,
        and a node replaying old configurations must still answer the leader it follows.
        """
        for peer, url in peers.items():
            if peer not in self._peers and url:
                self._addresses[peer] = PeerAddress.parse(url)
                self._peers[peer] = url
                if self._started:
                    self._start_sender(peer)
        for peer in removed:
            self._peers.pop(peer, None)
            task = self._senders.pop(peer, None)
            if task is not None:
                task.cancel()

    def _start_sender(self, peer: NodeId) -> None:
        self._senders[peer] = asyncio.create_task(
            self._stream_forever(peer), name=f"raft-send-{peer}"
        )

    def streaming(self, peer: NodeId) -> bool:
        """Whether a stream to `peer` is open and taking messages."""
        stream = self._streams.get(peer)
        return stream is not None and stream.accepting

    def send(self, messages: tuple[Message, ...]) -> None:
        """Writes each peer's share of `messages` to its stream as one frame."""
        batches: dict[NodeId, list[Message]] = {}
        for m in messages:
            batches.setdefault(m.to, []).append(m)
        for peer, batch in batches.items():
            stream = self._streams.get(peer)
            if stream is not None and stream.write(_frame(batch)):
                continue
            self._metrics.peer_send_failures.labels(str(peer)).inc()

    async def _stream_forever(self, peer: NodeId) -> None:
        loop = asyncio.get_running_loop()
        url = self._peers[peer] + PEER_PATH
        failures = 0
        logged = ""
        while True:
            opened = loop.time()
            try:
                problem = await self._stream(peer)
            except Exception as exc:
                # A sender that died would cut this node off from `peer` for good, silently.
                log.exception("peer stream to %s failed unexpectedly", peer)
                problem = repr(exc)
            if loop.time() - opened >= HEALTHY_STREAM_SECONDS:
                failures, logged = 0, ""
            failures += 1
            self._metrics.peer_send_failures.labels(str(peer)).inc()
            # A new reason is news (a peer that was down now refuses our token); a
            # repeated one is logged every 100th time, so a dead peer cannot flood the log.
            if problem != logged or failures % 100 == 0:
                logged = problem
                log.warning(
                    "cannot stream to peer %s", peer,
                    extra={"ctx": {"peer": peer, "url": url, "error": problem,
                                   "failures": failures}},
                )  # fmt: skip
            # Don't spin against a dead peer.
            await asyncio.sleep(min(0.05 * (failures - 1), 0.2))

    async def _stream(self, peer: NodeId) -> str:
        """Streams to `peer` until the stream breaks; returns why it did."""
        address = self._addresses[peer]
        connection = PeerConnection(PEER_PATH, self._headers)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().create_connection(
                    lambda: connection, address.host, address.port,
                    ssl=ssl.create_default_context() if address.tls else None,
                )  # fmt: skip
        except TimeoutError:
            return f"connect timed out after {CONNECT_TIMEOUT}s"
        except OSError as exc:
            return f"cannot connect: {exc}"
        try:
            await connection.handshake(address.authority)
            self._streams[peer] = connection
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        return await connection.end()
                now = time.monotonic()
                if connection.stalled_since is not None:
                    if now - connection.stalled_since >= WRITE_TIMEOUT:
                        return f"peer stopped reading for {WRITE_TIMEOUT}s"
                elif now - connection.last_write >= KEEPALIVE_SECONDS:
                    connection.write(b"\n")
        except StreamEnded as exc:
            return str(exc)
        finally:
            if self._streams.get(peer) is connection:
                del self._streams[peer]
            connection.close()

    async def close(self) -> None:
        for task in self._senders.values():
            task.cancel()
        await asyncio.gather(*self._senders.values(), return_exceptions=True)
