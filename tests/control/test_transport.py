"""The peer stream: its frame format, the sender against real HTTP servers, and how a
real node answers streams it refuses."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from control.metrics import ControlMetrics
from control.raft.codec import encode_message
from control.raft.messages import Heartbeat, Message
from control.transport import (
    KEEPALIVE_SECONDS,
    MAX_FRAME_BYTES,
    PEER_PATH,
    WRITE_TIMEOUT,
    FrameError,
    FrameReader,
    HttpTransport,
)
from tests.support.control_cluster import ControlCluster, module_cluster
from tests.support.servers import LOOPBACK, ProcessGroup, wait_until

HEARTBEAT = Heartbeat(frm=1, to=2, term=3, commit=4, seq=5)
FRAME = json.dumps([encode_message(HEARTBEAT)]).encode()

# -- frames ----------------------------------------------------------------------------------


def test_frames_split_across_reads_decode_once_whole() -> None:
    reader = FrameReader()
    stream = FRAME + b"\n\n" + FRAME + b"\n"
    batches = [b for i in range(0, len(stream), 7) for b in reader.feed(stream[i : i + 7])]
    assert batches == [[HEARTBEAT], [HEARTBEAT]]
    assert list(reader.end()) == []


def test_a_one_shot_body_need_not_end_with_a_newline() -> None:
    reader = FrameReader()
    assert list(reader.feed(FRAME)) == []
    assert list(reader.end()) == [[HEARTBEAT]]


@pytest.mark.parametrize("frame", [b"{", b'"text"', b'[{"type": "no_such_message"}]', b"[1]"])
def test_a_malformed_frame_is_refused(frame: bytes) -> None:
    with pytest.raises(FrameError, match=r"undecodable peer message|JSON array"):
        list(FrameReader().feed(frame + b"\n"))


def test_an_endless_frame_is_refused_before_it_is_buffered_whole() -> None:
    reader = FrameReader()
    chunk = b"[" + b" " * (1 << 20)
    for _ in range(MAX_FRAME_BYTES // len(chunk)):
        assert list(reader.feed(chunk)) == []
    with pytest.raises(FrameError, match="frame over"):
        list(reader.feed(chunk))


# -- the sender ------------------------------------------------------------------------------

TOKEN = "sender-test-token"
DEADLINE = 10.0


def heartbeat(seq: int) -> Heartbeat:
    return Heartbeat(frm=1, to=2, term=3, commit=4, seq=seq)


class Recorder:
    """A peer's `/raft/messages` that records what arrives; `refuse` answers every request
    with that status, and `end_after` answers a stream after that many frames."""

    def __init__(self, refuse: int | None = None, end_after: int | None = None) -> None:
        self.refuse = refuse
        self.end_after = end_after
        self.messages: list[Message] = []
        self.keepalives = 0
        self.streams = 0

    async def endpoint(self, request: Request) -> Response:
        if self.refuse is not None:
            return Response(b'{"error": "refused"}', self.refuse, headers={"connection": "close"})
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        streaming = request.headers.get("transfer-encoding") == "chunked"
        self.streams += streaming
        reader, frames = FrameReader(), 0
        async for data in request.stream():
            if not data.strip():
                self.keepalives += len(data)
            for batch in reader.feed(data):
                self.messages.extend(batch)
                frames += 1
            if streaming and self.end_after is not None and frames >= self.end_after:
                return Response(status_code=204, headers={"connection": "close"})
        for batch in reader.end():
            self.messages.extend(batch)
        return Response(status_code=204)

    def seqs(self) -> list[int]:
        return [m.seq for m in self.messages if isinstance(m, Heartbeat)]


async def serve_while(
    app: Starlette, test: Callable[[str], Awaitable[None]]
) -> None:
    """Runs `test(url)` against `app` served by uvicorn on a free loopback port."""
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await test(f"http://{LOOPBACK}:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        server.force_exit = True
        await serving


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def sender(url: str, metrics: ControlMetrics) -> AsyncIterator[HttpTransport]:
    transport = HttpTransport({2: url}, TOKEN, metrics)
    transport.start()
    try:
        yield transport
    finally:
        await transport.close()


def recorder_app(recorder: Recorder) -> Starlette:
    return Starlette(routes=[Route(PEER_PATH, recorder.endpoint, methods=["POST"])])


def failures(metrics: ControlMetrics) -> float:
    value = metrics.registry.get_sample_value(
        "ringleader_raft_peer_send_failures_total", {"peer": "2"}
    )
    return value or 0.0


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Why the sender's streams to peer 2 ended, as it logged them."""
    return [str(r.ctx["error"]) for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "cannot stream to peer 2"]  # fmt: skip


async def until_delivered(transport: HttpTransport, recorder: Recorder) -> None:
    """Sends a probe until one arrives: the stream is open from then on."""
    deadline = time.monotonic() + DEADLINE
    while not recorder.messages:
        if time.monotonic() > deadline:
            raise TimeoutError("no message reached the peer")
        transport.send((heartbeat(0),))
        await asyncio.sleep(0.01)


def test_batches_arrive_in_order_on_one_stream_with_keepalives_between() -> None:
    recorder = Recorder()

    async def test(url: str) -> None:
        async with sender(url, ControlMetrics()) as transport:
            await until_delivered(transport, recorder)
            probes = len(recorder.messages)
            for first in range(1, 301, 3):
                transport.send((heartbeat(first), heartbeat(first + 1), heartbeat(first + 2)))
            await eventually(lambda: len(recorder.messages) >= probes + 300, "every batch")
            # Probes still in flight when the stream opened come first; then every batch.
            assert [seq for seq in recorder.seqs() if seq] == list(range(1, 301))
            idle_from = recorder.keepalives
            await eventually(lambda: recorder.keepalives >= idle_from + 2, "keepalives")
            assert recorder.streams == 1

    asyncio.run(serve_while(recorder_app(recorder), test))


def test_messages_for_a_peer_without_a_stream_are_dropped_and_counted() -> None:
    async def test() -> None:
        metrics = ControlMetrics()
        # Nothing listens on a port just released, so no stream ever opens.
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
        async with sender(url, metrics) as transport:
            before = failures(metrics)
            transport.send((heartbeat(1), heartbeat(2)))  # one batch
            assert failures(metrics) == before + 1

    asyncio.run(test())


def test_a_refusing_peer_is_logged_with_its_answer(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(refuse=401)
    metrics = ControlMetrics()

    async def test(url: str) -> None:
        async with sender(url, metrics):
            await eventually(lambda: bool(logged_errors(caplog)), "the refusal to be logged")
        assert recorder.messages == []
        assert failures(metrics) >= 1

    with caplog.at_level(logging.WARNING, logger="ringleader.transport"):
        asyncio.run(serve_while(recorder_app(recorder), test))
    assert logged_errors(caplog)[0] == 'peer refused: 401 {"error": "refused"}'


def test_a_peer_that_was_down_and_now_refuses_is_logged_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first failure is not the only one worth a line: a peer that comes up and
    refuses our token must show in the log long before the 100th repeat."""

    async def test() -> None:
        # Nothing listens yet on a port just released.
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        async with sender(f"http://{LOOPBACK}:{port}", ControlMetrics()):
            await eventually(lambda: bool(logged_errors(caplog)), "the first failure")
            assert logged_errors(caplog)[0].startswith("cannot connect")
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, port))
            app = recorder_app(Recorder(refuse=401))
            server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            try:
                await eventually(lambda: any(e.startswith("peer refused: 401")
                                             for e in logged_errors(caplog)),
                                 "the refusal to be logged")  # fmt: skip
            finally:
                server.should_exit = server.force_exit = True
                await serving
        # Repeats of one reason are not logged each time.
        errors = logged_errors(caplog)
        assert all(a != b for a, b in itertools.pairwise(errors))

    with caplog.at_level(logging.WARNING, logger="ringleader.transport"):
        asyncio.run(test())


def test_a_stream_the_peer_ends_is_reopened() -> None:
    recorder = Recorder(end_after=1)

    async def test(url: str) -> None:
        async with sender(url, ControlMetrics()) as transport:
            # Each stream carries one frame, then the peer ends it and a new one opens.
            for seq in range(1, 4):
                await eventually(lambda n=seq: recorder.streams == n, f"stream {seq}")
                await eventually(lambda: transport.streaming(2), f"stream {seq} open")
                transport.send((heartbeat(seq),))
                await eventually(lambda n=seq: n in recorder.seqs(), f"message {seq}")

    asyncio.run(serve_while(recorder_app(recorder), test))


def test_a_peer_that_stops_reading_loses_its_stream_within_the_write_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handshake = b"HTTP/1.1 204 No Content\r\n\r\n"

    async def accept_then_stop_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the handshake's "[]"
        writer.write(handshake)
        writer.transport.pause_reading()
        await asyncio.sleep(DEADLINE)

    def stream_dropped() -> bool:
        return any(f"peer stopped reading for {WRITE_TIMEOUT}s" in e for e in logged_errors(caplog))

    async def test() -> None:
        server = await asyncio.start_server(accept_then_stop_reading, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        metrics = ControlMetrics()
        batch = tuple(heartbeat(seq) for seq in range(2000))
        deadline = time.monotonic() + DEADLINE
        stalled_at: float | None = None
        try:
            async with sender(f"http://{LOOPBACK}:{port}", metrics) as transport:
                await eventually(lambda: transport.streaming(2), "the stream to open")
                while not stream_dropped():
                    assert time.monotonic() < deadline, "the stalled stream was never dropped"
                    # Fills the socket buffers the peer no longer drains; once they are
                    # full, batches are dropped instead of buffered without bound.
                    transport.send(batch)
                    if stalled_at is None and failures(metrics) > 0:
                        stalled_at = time.monotonic()
                    await asyncio.sleep(KEEPALIVE_SECONDS / 10)
        finally:
            server.close()
        assert stalled_at is not None
        assert time.monotonic() - stalled_at < 3 * WRITE_TIMEOUT

    with caplog.at_level(logging.WARNING, logger="ringleader.transport"):
        asyncio.run(test())


# -- a real node -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    yield from module_cluster(tmp_path_factory, "transport")


class EndlessBody:
    """A request body that streams keepalives (after `first`) until told to stop, as a
    live peer's does; bounded so a test that hangs still ends."""

    def __init__(self, first: bytes = b"") -> None:
        self.first = first
        self.exhausted = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        for _ in range(600):
            await asyncio.sleep(0.05)
            yield b"\n"
        self.exhausted = True


def refused_stream(url: str, headers: dict[str, str], body: EndlessBody) -> str:
    """How the node ended a stream it refused: its answer or, once it closed the connection
    under a peer still writing, the reset the peer saw first."""

    async def post() -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            try:
                r = await http.post(url + "/raft/messages", content=body, headers=headers)
            except httpx.TransportError as exc:
                return f"reset: {exc!r}"
            return f"{r.status_code} {r.json()['error']}"

    return asyncio.run(post())


def test_a_stream_with_a_wrong_token_is_refused_while_it_is_still_streaming(
    cluster: ControlCluster,
) -> None:
    node = cluster.wait_leader()
    labels = {"reason": "token"}
    before = cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels)
    body = EndlessBody()
    outcome = refused_stream(cluster.url(node), {"authorization": "Bearer wrong"}, body)
    assert outcome.startswith(("401 unauthorized", "reset")), outcome
    assert not body.exhausted  # answered, not left to hang until the peer gave up
    assert cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels) == before + 1


def test_a_malformed_frame_mid_stream_ends_the_stream_with_a_400(cluster: ControlCluster) -> None:
    node = cluster.wait_leader()
    labels = {"reason": "malformed"}
    before = cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels)
    body = EndlessBody(b"[]\n\n[]\n{not json\n")
    outcome = refused_stream(cluster.url(node), cluster.headers(), body)
    assert outcome.startswith(("400 bad_message", "reset")), outcome
    assert not body.exhausted
    assert cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels) == before + 1


def test_a_node_stops_promptly_although_its_peers_stream_to_it(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    cluster = ControlCluster(group, tmp_path / "cluster")
    try:
        cluster.start()
        leader = cluster.current_leader()
        process = cluster.nodes[leader].process
        assert process is not None
        # Every peer holds a stream open to the leader.
        wait_until(lambda: all(s["commit_index"] > 0 for s in cluster.statuses().values()),
                   10, "every node to hear from the leader")
        process.signal(signal.SIGTERM)
        assert process.terminate() == 0
        assert "graceful shutdown exceeded" not in process.log_tail(200)
    finally:
        cluster.close()
        group.cleanup()
