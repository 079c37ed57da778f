"""Key rules are memcached's: every backend must accept every key the proxy routes."""

from __future__ import annotations

import pytest

from proxy.keys import MAX_KEY_BYTES, key_problem


@pytest.mark.parametrize(
    "key",
    [b"a", b"user:42", b"x" * MAX_KEY_BYTES, "café".encode(), bytes(range(0x80, 0x100)), b"~!"],
)
def test_valid_keys_have_no_problem(key: bytes) -> None:
    assert key_problem(key) is None


def test_empty_key_is_refused() -> None:
    assert key_problem(b"") == "key is empty"


def test_key_over_250_bytes_is_refused_naming_its_length() -> None:
    assert key_problem(b"x" * 251) == "key is 251 bytes; the limit is 250"
    # The limit counts bytes, not characters.
    assert key_problem("é".encode() * 126) == "key is 252 bytes; the limit is 250"


@pytest.mark.parametrize("byte", [*range(0x21), 0x7F])
def test_space_and_control_bytes_are_refused(byte: int) -> None:
    assert key_problem(b"ab" + bytes([byte]) + b"cd") == "key contains a space or a control byte"


@pytest.mark.parametrize("key", [b"rlhc:" + b"0" * 40, b"rlhl:x", b"rlhc:"])
def test_the_http_cache_namespace_is_refused(key: bytes) -> None:
    problem = key_problem(key)
    assert problem is not None
    assert "reserved for the HTTP cache" in problem


def test_keys_that_merely_resemble_the_namespace_are_fine() -> None:
    assert key_problem(b"rlhx:1") is None
    assert key_problem(b"RLHC:1") is None
    assert key_problem(b"xrlhc:1") is None
