"""RESP2 framing of backend replies (proxy/native/resp.py): whole replies come out byte for
byte, however the stream is cut."""

from __future__ import annotations

import random

import pytest

from proxy.native.resp import (
    ReplyFramer,
    array,
    array_items,
    bulk,
    error,
    integer,
    reply_end,
)

REPLIES = [
    b"+OK\r\n",
    b"-ERR wrong type\r\n",
    b":42\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$5\r\nhe\r\nl\r\n",  # a value holding CRLF
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n",
    b"*2\r\n*2\r\n+x\r\n:1\r\n$3\r\nabc\r\n",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_reply_end_finds_the_whole_reply(reply: bytes) -> None:
    stream = reply + b"+NEXT\r\n"
    assert reply_end(stream, 0) == len(reply)
    for cut in range(len(reply)):
        assert reply_end(reply[:cut], 0) == -1, cut


def test_framer_cuts_any_split_of_a_stream_into_the_same_replies() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    stream = b"".join(REPLIES * 20)
    for _ in range(50):
        framer = ReplyFramer()
        out: list[bytes] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 40)
            framer.feed(stream[pos : pos + step])
            pos += step
            while (reply := framer.gets(None)) is not False:
                assert isinstance(reply, bytes)
                out.append(reply)
        assert out == REPLIES * 20


@pytest.mark.parametrize("garbage", [b"?what\r\n", b"$abc\r\n", b"$3\r\nabcXY", b"*x\r\n"])
def test_bytes_that_are_not_resp_raise(garbage: bytes) -> None:
    framer = ReplyFramer()
    framer.feed(garbage)
    with pytest.raises(ValueError):  # noqa: PT011 - int() and the framer word it differently
        framer.gets(None)


def test_an_endless_line_raises_rather_than_buffering_forever() -> None:
    with pytest.raises(ValueError, match="no line end"):
        reply_end(b"+" + b"x" * (70 * 1024), 0)


def test_array_items_and_builders() -> None:
    reply = b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n"
    assert array_items(reply) == [b"$1\r\na\r\n", b"$-1\r\n", b":7\r\n"]
    assert array_items(b"*-1\r\n") == []
    assert array(array_items(reply)) == reply
    assert bulk(b"xy") == b"$2\r\nxy\r\n"
    assert integer(b":-3\r\n") == -3
    with pytest.raises(ValueError, match="not an integer"):
        integer(b"+OK\r\n")
    assert error("ERR two\r\nlines") == b"-ERR two lines\r\n"
