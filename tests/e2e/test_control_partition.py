"""A control node cut off from its peers, but not from the proxies.

Its own fleet (pool `default` only): the control nodes reach each other through the
per-link TCP relays of `tests/support/control_cluster.py`, so one node's peer links can be
blackholed while the proxies still reach it directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, pools={"default": "memcached"}, control_relays=True)
    try:
        f.start()
        yield f
    finally:
        f.close()


def test_proxies_follow_the_majority_when_their_watch_node_is_partitioned(
    fleet: Fleet,
) -> None:
    """Every proxy's ring watch starts at the first --control URL (node 1) and stays there
    while node 1 answers. Node 1 is cut off from nodes 2 and 3 (its peer links blackholed)
    but the proxies still reach it. A ring change committed by the majority must reach
    every proxy soon, or the proxies route with different rings than the rest of the
    fleet (docs/invariants.md, invariant 1, in spirit: one agreed ring)."""
    control = fleet.control
    assert control.relays is not None
    before = fleet.ring_of(fleet.proxies["default"][0])[0]
    control.relays.isolate(1)
    control.wait_leader(20, among=[2, 3])
    control.write_acked("POST", "/v1/pools/default/backends/mc1/drain",
                        {"why": "partition test"}, prefer=[2, 3])  # fmt: skip
    # Well inside one 25 s long-poll, and far more than a ring change takes (< 1 s).
    fleet.wait_converged("default", lambda m: "mc1" not in m, "the majority's ring", 10,
                         after=before)  # fmt: skip
