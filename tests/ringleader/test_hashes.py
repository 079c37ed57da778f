"""Key hashes must equal twemproxy's `src/hashkit/nc_fnv.c` and `nc_md5.c` bit for bit."""

from __future__ import annotations

from hashlib import md5 as reference_md5

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringleader.ring.hashes import KEY_HASHES, fnv1a_64, md5

# Produced once by compiling twemproxy's `hash_fnv1a_64` (nc_fnv.c, copied verbatim, taking
# `const char *`) with gcc on x86-64, where `char` is signed, and printing each result.
# The rows with bytes >= 0x80 pin the sign extension of `(uint32_t)key[x]`.
FNV1A_64_GOLDEN = [
    (b"", 0x84222325),
    (b"a", 0x8601EC8C),
    (b"foo", 0xFED9D577),
    (b"foobar", 0xF73967E8),
    (b"user:1234", 0xA44673C4),
    ("café".encode(), 0xCEF6BB89),
    (b"\x80", 0x79FDEC5F),
    (b"\xff", 0x79FE466E),
    (b"key\x80\x81\xfe\xff", 0x888DB0A4),
]


@pytest.mark.parametrize(("key", "expected"), FNV1A_64_GOLDEN)
def test_fnv1a_64_matches_twemproxy_compiled_on_x86(key: bytes, expected: int) -> None:
    assert fnv1a_64(key) == expected


def _fnv1a_32bit_unsigned(key: bytes) -> int:
    h = 0x84222325
    for b in key:
        h = ((h ^ b) * 0x1B3) & 0xFFFFFFFF
    return h


def test_fnv1a_64_sign_extends_high_bytes_like_signed_char() -> None:
    # An implementation reading bytes as unsigned would give a different hash for these.
    for key in (b"\x80", b"\xff", "café".encode()):
        assert fnv1a_64(key) != _fnv1a_32bit_unsigned(key)


@given(st.binary(max_size=64).filter(bytes.isascii))
def test_fnv1a_64_on_ascii_is_plain_32_bit_fnv1a_with_truncated_64_bit_constants(
    key: bytes,
) -> None:
    assert fnv1a_64(key) == _fnv1a_32bit_unsigned(key)


@given(st.binary(max_size=64))
def test_fnv1a_64_is_a_32_bit_value(key: bytes) -> None:
    assert 0 <= fnv1a_64(key) < 2**32


@given(st.binary(max_size=64))
def test_md5_is_the_first_four_digest_bytes_little_endian(key: bytes) -> None:
    assert md5(key) == int.from_bytes(reference_md5(key).digest()[:4], "little")


def test_md5_golden_value() -> None:
    # md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8; bytes ac bd 18 db read little-endian.
    assert md5(b"foo") == 0xDB18BDAC


def test_key_hashes_offers_exactly_the_twemproxy_names_we_support() -> None:
    assert set(KEY_HASHES) == {"fnv1a_64", "md5"}
