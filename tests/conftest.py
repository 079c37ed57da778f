from __future__ import annotations

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
