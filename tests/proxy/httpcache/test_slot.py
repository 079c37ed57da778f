"""What a URI's slot holds: variant indexes and their keys, pass markers."""

import pytest

from proxy.httpcache.slot import (
    GENERATION_BYTES,
    UnreadableSlot,
    VariantIndex,
    decode_index,
    encode_index,
    variant_key,
    variant_of,
)


def test_an_index_round_trips_whatever_bytes_its_generation_holds() -> None:
    index = VariantIndex((b"accept-encoding", b"accept-language"), b"\0,\0,\0,\0\0")
    index, _ = index.with_variant(b"a" * 40, 8)
    index, _ = index.with_variant(b"b" * 40, 8)
    assert decode_index(encode_index(index)) == index
    empty = VariantIndex.new((b"accept",))
    assert len(empty.generation) == GENERATION_BYTES
    assert decode_index(encode_index(empty)) == empty


@pytest.mark.parametrize("data", [b"RLHV\x01short", b"RLHV\x01" + b"g" * 8 + b"no-separator"])
def test_a_malformed_index_is_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableSlot):
        decode_index(data)


def test_variants_past_the_limit_push_out_the_oldest() -> None:
    index = VariantIndex.new((b"accept",))
    evicted: tuple[bytes, ...] = ()
    for slot in (b"1", b"2", b"3"):
        index, evicted = index.with_variant(slot, 2)
    assert (index.variants, evicted) == ((b"2", b"3"), (b"1",))
    # Storing a listed variant again moves it to the end and evicts nothing.
    index, evicted = index.with_variant(b"2", 2)
    assert (index.variants, evicted) == ((b"3", b"2"), ())


def test_variant_keys_tell_absent_empty_and_present_values_apart() -> None:
    index = VariantIndex.new((b"a", b"b"))
    records = [
        ((b"a", None), (b"b", None)),
        ((b"a", b""), (b"b", None)),
        ((b"a", b"x"), (b"b", None)),
        ((b"a", None), (b"b", b"x")),
    ]
    keys = {variant_key(b"GET http://o/p", index, variant_of(r)) for r in records}
    assert len(keys) == len(records)


def test_a_new_generation_never_finds_the_old_variants() -> None:
    record = ((b"accept", b"x"),)
    first, second = VariantIndex.new((b"accept",)), VariantIndex.new((b"accept",))
    assert variant_key(b"k", first, variant_of(record)) != variant_key(
        b"k", second, variant_of(record)
    )
