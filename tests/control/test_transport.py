"""The peer stream: its frame format, and how a real node answers streams it refuses."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from control.raft.codec import encode_message
from control.raft.messages import Heartbeat
from control.transport import MAX_FRAME_BYTES, FrameError, FrameReader
from tests.support.control_cluster import ControlCluster, module_cluster
from tests.support.servers import ProcessGroup, wait_until

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
    node = cluster.current_leader()
    labels = {"reason": "token"}
    before = cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels)
    body = EndlessBody()
    outcome = refused_stream(cluster.url(node), {"authorization": "Bearer wrong"}, body)
    assert outcome.startswith(("401 unauthorized", "reset")), outcome
    assert not body.exhausted  # answered, not left to hang until the peer gave up
    assert cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels) == before + 1


def test_a_malformed_frame_mid_stream_ends_the_stream_with_a_400(cluster: ControlCluster) -> None:
    node = cluster.current_leader()
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
