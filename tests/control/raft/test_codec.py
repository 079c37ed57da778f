"""The wire encoding of messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.raft.codec import (
    CodecError,
    decode_message,
    encode_message,
    message_from_bytes,
    message_to_bytes,
)
from control.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from control.raft.types import Entry, EntryKind, Snapshot

ids = st.integers(1, 9)
nat = st.integers(0, 2**63)
entries = st.lists(
    st.builds(Entry, nat, nat, st.sampled_from(EntryKind), st.binary(max_size=20)), max_size=3
).map(tuple)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(RequestVote, ids, ids, nat, nat, nat, st.booleans(), st.booleans()),
    st.builds(RequestVoteResponse, ids, ids, nat, st.booleans(), st.booleans()),
    st.builds(AppendEntries, ids, ids, nat, nat, nat, entries, nat),
    st.builds(AppendEntriesResponse, ids, ids, nat, st.booleans(), nat, nat, nat),
    st.builds(Heartbeat, ids, ids, nat, nat, nat),
    st.builds(HeartbeatResponse, ids, ids, nat, nat),
    st.builds(InstallSnapshot, ids, ids, nat, st.builds(Snapshot, nat, nat, st.binary())),
    st.builds(TimeoutNow, ids, ids, nat),
)


@given(messages)
def test_every_message_round_trips(m: Message) -> None:
    assert decode_message(encode_message(m)) == m
    assert message_from_bytes(message_to_bytes(m)) == m


def test_format_is_stable() -> None:
    m = AppendEntries(1, 2, 3, 4, 2, (Entry(5, 3, EntryKind.NOOP, b"hi"),), 4)
    assert json.loads(message_to_bytes(m)) == {
        "v": 1, "type": "append_entries", "from": 1, "to": 2, "term": 3, "prev_index": 4,
        "prev_term": 2, "entries": [{"index": 5, "term": 3, "kind": 1, "data": "aGk="}],
        "commit": 4,
    }


def test_absent_defaulted_fields_and_unknown_keys_are_accepted() -> None:
    decoded = decode_message(
        {"v": 1, "type": "request_vote", "from": 1, "to": 2, "term": 3,
         "last_log_index": 0, "last_log_term": 0, "future_field": True}
    )
    assert decoded == RequestVote(1, 2, 3, 0, 0)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"v": 2}, "version"),
        ({"type": "gossip"}, "unknown message type"),
        ({"term": -1}, "non-negative"),
        ({"term": True}, "non-negative"),
        ({"granted": 1}, "boolean"),
        ({"from": None}, "non-negative"),
    ],
)
def test_malformed_messages_are_rejected(change: dict[str, object], error: str) -> None:
    d = encode_message(RequestVoteResponse(1, 2, 3, True))
    d.update(change)
    with pytest.raises(CodecError, match=error):
        decode_message(d)


def test_missing_required_field_and_bad_payloads_are_rejected() -> None:
    d = encode_message(TimeoutNow(1, 2, 3))
    del d["term"]
    with pytest.raises(CodecError, match="lacks 'term'"):
        decode_message(d)
    snap = encode_message(InstallSnapshot(1, 2, 3, Snapshot(1, 1, b"x")))
    snap["snapshot"] = {"index": 1, "term": 1, "data": "not base64!"}
    with pytest.raises(CodecError, match="base64"):
        decode_message(snap)
    bad_kind = encode_message(AppendEntries(1, 2, 3, 0, 0, (Entry(1, 3),), 0))
    bad_kind["entries"] = [{"index": 1, "term": 3, "kind": 7, "data": ""}]
    with pytest.raises(CodecError):
        decode_message(bad_kind)
    with pytest.raises(CodecError, match="not JSON"):
        message_from_bytes(b"\xff")
