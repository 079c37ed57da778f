"""control.service: the process-wide settings a control node runs with."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from control.service import keep_gc_pauses_short


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process's collector as it was: the settings are process-wide."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_state_leaves_every_later_collection() -> None:
    built_at_start_up = {"ring": ["a", "b"]}
    assert any(o is built_at_start_up for o in gc.get_objects())
    keep_gc_pauses_short()
    assert gc.get_freeze_count() > 0
    assert not any(o is built_at_start_up for o in gc.get_objects())


@pytest.mark.usefixtures("restored_gc")
def test_full_collections_come_rarer_than_by_default() -> None:
    gc.set_threshold(700, 10, 10)
    keep_gc_pauses_short()
    young, middle, oldest = gc.get_threshold()
    assert (young, middle) == (700, 10)  # the younger generations as often as before
    assert oldest > 10
