"""twemproxy's hash_tag (nc_server.c, server_pool_idx), byte for byte."""

from __future__ import annotations

import pytest

from ringleader.backend_url import parse_backend_url
from ringleader.ring import KetamaRing
from ringleader.ring.hashes import fnv1a_64
from ringleader.ring.hashtag import hashed_part, parse_hash_tag

BRACES = b"{}"


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        (b"{user:1}:profile", b"user:1"),
        (b"cart:9:{user:1}", b"user:1"),
        (b"a{b}c", b"b"),
        (b"no-tag-at-all", b"no-tag-at-all"),
        # no opening tag, only a closing one
        (b"only}closing", b"only}closing"),
        # an opening tag with no closing one after it
        (b"only{opening", b"only{opening"),
        (b"}before{", b"}before{"),
        # empty between: the whole key, not the empty string
        (b"{}empty", b"{}empty"),
        (b"x{}", b"x{}"),
        # the first opening tag, then the first closing tag after it
        (b"{a}{b}", b"a"),
        (b"}{a}", b"a"),
        (b"{{a}}", b"{a"),
        (b"{a{b}c}", b"a{b"),
        # an empty first tag does not move on to a later one
        (b"{}{b}", b"{}{b}"),
        # tags at both ends of the key
        (b"{whole}", b"whole"),
        (b"{", b"{"),
        (b"}", b"}"),
        (b"", b""),
        # bytes >= 0x80 are ordinary bytes, inside and outside the tag
        (b"\xc3\xa9{\x80\xff}\xfe", b"\x80\xff"),
        (b"{\xc3\xa9}", b"\xc3\xa9"),
    ],
)
def test_hashed_part(key: bytes, hashed: bytes) -> None:
    assert hashed_part(key, BRACES) == hashed


def test_same_opening_and_closing_character() -> None:
    assert hashed_part(b"a$b$c$d", b"$$") == b"b"
    assert hashed_part(b"$$x", b"$$") == b"$$x"


def test_high_tag_bytes_are_bytes_not_characters() -> None:
    assert hashed_part(b"k\x80in\x81", b"\x80\x81") == b"in"


@pytest.mark.parametrize("text", ["", "{", "{}}", "«»", "é}"])
def test_parse_refuses_anything_but_two_ascii_characters(text: str) -> None:
    with pytest.raises(ValueError, match="two ASCII characters"):
        parse_hash_tag(text)


def test_parse() -> None:
    assert parse_hash_tag("{}") == b"{}"
    assert parse_hash_tag("$$") == b"$$"


def test_ring_hashes_only_the_tag() -> None:
    backends = [parse_backend_url(f"memcached://10.0.0.{i}:11211") for i in range(1, 9)]
    ring = KetamaRing(backends, "fnv1a_64", BRACES)
    plain = KetamaRing(backends, "fnv1a_64")
    assert ring.hash_tag == BRACES
    assert plain.hash_tag is None
    owners = {ring.lookup(b"{user:42}:%d" % i) for i in range(200)}
    assert owners == {plain.lookup(b"user:42")}
    for key in (b"{}x", b"plain", b"{unclosed"):
        assert ring.lookup(key) == plain.lookup(key)
    key_hash, _, _ = ring.locate(b"a{bc}d")
    assert key_hash == fnv1a_64(b"bc")
    assert ring.replicas(b"{user:42}:1", 3) == plain.replicas(b"user:42", 3)


def test_ring_refuses_a_tag_that_is_not_two_bytes() -> None:
    backends = [parse_backend_url("memcached://10.0.0.1:11211")]
    with pytest.raises(ValueError, match="two bytes"):
        KetamaRing(backends, "fnv1a_64", b"{")
