import pytest

from proxy.httpcache.decoded import DecodedEntries
from proxy.httpcache.entry import Entry, UnreadableEntry, encode_entry

T = 1_700_000_000.0


def stored(body: bytes, max_age: int = 60) -> bytes:
    headers = ((b"cache-control", b"max-age=%d" % max_age), (b"date", b"x"))
    return encode_entry(Entry(200, headers, body, T, T))


def test_the_same_bytes_give_the_same_entry_and_new_bytes_a_new_one() -> None:
    decoded = DecodedEntries()
    first = decoded.decode(b"slot", stored(b"a"))
    # A copy, as every read from the cache tier is: equal bytes, another object.
    assert decoded.decode(b"slot", bytes(bytearray(stored(b"a")))) is first
    refilled = decoded.decode(b"slot", stored(b"a", max_age=5))
    assert refilled is not first
    assert refilled.cache_control.max_age == 5
    assert decoded.decode(b"other", stored(b"a")) is not first


def test_slots_beyond_the_cap_are_forgotten_oldest_first() -> None:
    decoded = DecodedEntries(max_slots=2)
    oldest = decoded.decode(b"1", stored(b"1"))
    kept = decoded.decode(b"2", stored(b"2"))
    decoded.decode(b"3", stored(b"3"))
    assert decoded.decode(b"2", stored(b"2")) is kept
    assert decoded.decode(b"1", stored(b"1")) is not oldest


def test_the_byte_budget_bounds_what_is_kept() -> None:
    big = stored(b"x" * 1000)
    decoded = DecodedEntries(max_bytes=len(big) + 10)
    first = decoded.decode(b"big", big)
    assert decoded.decode(b"big", big) is first
    decoded.decode(b"small", stored(b"y"))  # over budget together: the big one goes
    assert decoded.decode(b"big", big) is not first
    too_big = stored(b"z" * 2000)
    assert decoded.decode(b"huge", too_big) is not decoded.decode(b"huge", too_big)


def test_unreadable_bytes_raise_and_are_not_kept() -> None:
    decoded = DecodedEntries()
    with pytest.raises(UnreadableEntry):
        decoded.decode(b"slot", b"junk")
    with pytest.raises(UnreadableEntry):
        decoded.decode(b"slot", b"junk")
