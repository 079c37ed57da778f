from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ProcessGroup


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Real processes for one test, killed by PID at teardown."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture
def seed() -> int:
    """A randomized test's seed: RINGLEADER_TEST_SEED to rerun one, else a fresh one, printed."""
    env = os.environ.get("RINGLEADER_TEST_SEED")
    value = int(env) if env else random.SystemRandom().randrange(2**32)
    print(f"RINGLEADER_TEST_SEED={value}")
    return value
