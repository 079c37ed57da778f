"""Entity-tags: RFC 9110 §8.8.3."""

from hypothesis import given
from hypothesis import strategies as st

from proxy.httpcache.etag import entity_tag, entity_tags, strong_equal, weak_equal


def test_list_with_commas_inside_tags_8_8_3() -> None:
    assert entity_tags(b'"a,b", W/"c" ,,"d"') == [b'"a,b"', b'W/"c"', b'"d"']


def test_malformed_lists() -> None:
    for value in (b"a", b'"a', b"W/a", b'"a"b', b"W/"):
        assert entity_tags(value) is None


def test_single_tag() -> None:
    assert entity_tag(b' W/"x" ') == b'W/"x"'
    assert entity_tag(b'"x", "y"') is None


def test_comparisons_8_8_3_2() -> None:
    assert strong_equal(b'"1"', b'"1"')
    assert not strong_equal(b'W/"1"', b'W/"1"')
    assert not strong_equal(b'W/"1"', b'"1"')
    assert weak_equal(b'W/"1"', b'"1"')
    assert not weak_equal(b'"1"', b'"2"')


@given(st.binary(max_size=200))
def test_never_raises(value: bytes) -> None:
    entity_tags(value)
