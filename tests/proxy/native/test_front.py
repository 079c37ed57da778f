"""The shared front core (proxy/native/front.py) with a toy line protocol and a recording
transport: reply order, one write per event-loop turn, the pipeline limit and the
connection cap."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.metrics import ProxyMetrics
from proxy.native.front import Flusher, Front, FrontConnection, FrontLimits, FrontMetrics, Slot


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.reading = True
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return None


class Lines(FrontConnection):
    """Each line is a command; `now X` is answered at once, anything else waits in
    `pending` until the test completes it."""

    def __init__(self, front: Front) -> None:
        super().__init__(front)
        self.buffer = b""
        self.pending: dict[bytes, Slot] = {}

    def received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            if self.saturated():
                self.hold()
                return
            line, _, self.buffer = self.buffer.partition(b"\n")
            if line.startswith(b"now "):
                self.answer(line[4:] + b"\n")
            else:
                self.pending[line] = self.reserve()


def make_front(max_pipeline: int = 100, max_connections: int = 10) -> Front:
    limits = FrontLimits(1000, 10, max_pipeline, max_connections)
    metrics = FrontMetrics(ProxyMetrics(), "toy", ["cmd"])
    return Front("toy", limits, metrics, b"NO\n", Flusher())


def connect(front: Front) -> tuple[Lines, RecordingTransport]:
    conn = Lines(front)
    transport = RecordingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_replies_keep_request_order_and_go_out_in_one_write_per_turn() -> None:
    async def main() -> None:
        conn, transport = connect(make_front())
        conn.data_received(b"a\nb\nnow x\nc\n")
        conn.complete(conn.pending[b"c"], b"C\n")
        conn.complete(conn.pending[b"b"], b"B\n")
        await next_turn()
        assert transport.writes == []  # "a" holds back everything after it
        conn.complete(conn.pending[b"a"], b"A\n")
        await next_turn()
        assert transport.writes == [b"A\nB\nx\nC\n"]

    asyncio.run(main())


def test_reading_pauses_at_the_pipeline_limit_and_resumes_as_replies_drain() -> None:
    async def main() -> None:
        conn, transport = connect(make_front(max_pipeline=2))
        conn.data_received(b"1\n2\n3\n4\n5\n")
        assert sorted(conn.pending) == [b"1", b"2"]
        assert not transport.reading
        conn.complete(conn.pending[b"1"], b"one\n")
        assert sorted(conn.pending) == [b"1", b"2", b"3"]
        assert not transport.reading  # 2 and 3 in flight: still full
        for name in (b"2", b"3", b"4"):
            conn.complete(conn.pending[name], name + b"\n")
        assert sorted(conn.pending) == [b"1", b"2", b"3", b"4", b"5"]
        conn.complete(conn.pending[b"5"], b"5\n")
        assert transport.reading
        await next_turn()
        assert b"".join(transport.writes) == b"one\n2\n3\n4\n5\n"

    asyncio.run(main())


def test_connections_past_the_cap_get_the_refusal() -> None:
    async def main() -> None:
        front = make_front(max_connections=2)
        (first, _), _ = connect(front), connect(front)
        refused, transport = connect(front)
        assert transport.writes == [b"NO\n"]
        assert transport.eof  # closed after a lingering read, not reset
        assert len(front.connections) == 2
        assert front.metrics.refused.value == 1
        assert front.metrics.connections.value == 2
        refused.connection_lost(None)
        first.connection_lost(None)
        assert front.metrics.connections.value == 1
        assert connect(front)[1].writes == []

    asyncio.run(main())


def test_close_after_replies_waits_for_the_last_reply() -> None:
    async def main() -> None:
        conn, transport = connect(make_front())
        conn.data_received(b"a\n")
        conn.close_after_replies()
        conn.data_received(b"now ignored\n")
        assert not transport.eof
        conn.complete(conn.pending[b"a"], b"A\n")
        await next_turn()
        assert transport.writes == [b"A\n"]
        assert transport.eof

    asyncio.run(main())
