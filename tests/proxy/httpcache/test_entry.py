"""Entry encoding: versioned, struct-packed; unreadable bytes raise UnreadableEntry."""

import contextlib
import dataclasses
import os
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.httpcache.entry import MAGIC, VERSION, Entry, UnreadableEntry, decode_entry, encode_entry

ENTRY = Entry(
    200,
    ((b"content-type", b"text/plain"), (b"etag", b'"1"'), (b"x-empty", b"")),
    b"\x00hello\xff" * 10,
    1_700_000_000.25,
    1_700_000_000.5,
    ((b"accept-encoding", b"gzip"), (b"accept-language", None), (b"x", b"")),
)

_bytes = st.binary(max_size=40).map(lambda value: value.replace(b"\0", b""))
_entries = st.builds(
    Entry,
    st.integers(100, 999),
    st.lists(st.tuples(_bytes, _bytes), max_size=8).map(tuple),
    st.binary(max_size=500),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.tuples(_bytes, st.none() | _bytes), max_size=4).map(tuple),
)


def test_round_trip() -> None:
    assert decode_entry(encode_entry(ENTRY)) == ENTRY


@given(_entries)
def test_round_trip_property(entry: Entry) -> None:
    """Everything survives, except that field names come back lowercase."""
    lowered = tuple((name.lower(), value) for name, value in entry.headers)
    assert decode_entry(encode_entry(entry)) == dataclasses.replace(entry, headers=lowered)


def test_decoded_names_are_lowercase() -> None:
    written = dataclasses.replace(ENTRY, headers=((b"Cache-Control", b"max-age=60"),))
    assert decode_entry(encode_entry(written)).headers == ((b"cache-control", b"max-age=60"),)


def test_leading_magic_and_version() -> None:
    assert encode_entry(ENTRY)[:5] == MAGIC + bytes([VERSION])


def test_unknown_version_unreadable() -> None:
    data = bytearray(encode_entry(ENTRY))
    data[4] = VERSION + 1
    with pytest.raises(UnreadableEntry, match="version"):
        decode_entry(bytes(data))


def test_bad_magic_unreadable() -> None:
    with pytest.raises(UnreadableEntry, match="magic"):
        decode_entry(b"XXXX" + encode_entry(ENTRY)[4:])


@pytest.mark.parametrize("cut", [1, 5, 40])
def test_truncated_unreadable(cut: int) -> None:
    with pytest.raises(UnreadableEntry):
        decode_entry(encode_entry(ENTRY)[:-cut])


def test_trailing_bytes_unreadable() -> None:
    with pytest.raises(UnreadableEntry):
        decode_entry(encode_entry(ENTRY) + b"x")


def fixed(
    n_headers: int = 0,
    n_vary: int = 0,
    header_length: int = 0,
    vary_length: int = 0,
    request_time: float = 0.0,
) -> bytes:
    return struct.pack(
        "!4sBHddIIIIQ",
        MAGIC,
        VERSION,
        200,
        request_time,
        0.0,
        n_headers,
        n_vary,
        header_length,
        vary_length,
        0,
    )


def test_huge_lengths_rejected_before_slicing() -> None:
    with pytest.raises(UnreadableEntry, match="length"):
        decode_entry(fixed(2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1))


def test_field_count_mismatch_unreadable() -> None:
    with pytest.raises(UnreadableEntry, match="count"):
        decode_entry(fixed(n_headers=2, header_length=3) + b"a\0b")
    with pytest.raises(UnreadableEntry, match="count"):
        decode_entry(fixed(n_headers=0, header_length=1) + b"a")


def test_invalid_vary_flag_unreadable() -> None:
    with pytest.raises(UnreadableEntry, match="flag"):
        decode_entry(fixed(n_vary=1, vary_length=1) + b"\x02" + b"a")


def test_nul_in_field_refused_on_encode_rfc9110_5_5() -> None:
    for entry in (
        Entry(200, ((b"x", b"a\0b"),), b"", 0.0, 0.0),
        Entry(200, (), b"", 0.0, 0.0, ((b"accept", b"\0"),)),
    ):
        with pytest.raises(ValueError, match="NUL"):
            encode_entry(entry)


def test_non_finite_times_unreadable() -> None:
    with pytest.raises(UnreadableEntry, match="times"):
        decode_entry(fixed(request_time=float("nan")))


@pytest.mark.parametrize("data", [b"", b"RLHC", b"garbage" * 10])
def test_garbage_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableEntry):
        decode_entry(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_unreadable(data: bytes) -> None:
    with contextlib.suppress(UnreadableEntry):
        decode_entry(data)


def test_random_corruptions_decode_or_raise_unreadable() -> None:
    seed = int(os.environ.get("HTTPCACHE_SEED", random.randrange(2**32)))
    print(f"HTTPCACHE_SEED={seed}")
    rng = random.Random(seed)
    encoded = encode_entry(ENTRY)
    for _ in range(2000):
        data = bytearray(encoded)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(UnreadableEntry):
            decode_entry(bytes(data))
