"""`--wait` on ring changes, end to end: a 3-node control cluster, pool `default` with 3
memcached, and two real `ringleader proxy --control` processes (`tests/support/fleet.py`).

The command returns only once both proxies route on the new epoch, and a proxy that cannot
follow (SIGSTOPped) makes it fail after `--wait-timeout`, naming that proxy and its epoch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fleet import Fleet, FleetProxy
from tests.support.servers import wait_until

# Long enough that a stopped proxy is still "reporting" for the whole laggard test.
REPORT_TTL = 10.0
COMMITTED = re.compile(r"^\w+ \S+: pool default at epoch (\d+)", re.MULTILINE)
ARRIVED = re.compile(r"^epoch (\d+): 2/2 proxies in (\d+\.\d+) s$", re.MULTILINE)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(
        tmp_path_factory.mktemp("cli-wait"), report_ttl=REPORT_TTL, pools={"default": "memcached"}
    )
    try:
        f.start()
        yield f
    finally:
        f.close()


def reported_epochs(fleet: Fleet) -> dict[str, int | None]:
    """Proxy identity -> the epoch its last report gave, for proxies in the report window."""
    url = fleet.control.url(1) + "/v1/pools/default/proxies"
    body = fleet.http.get(url, timeout=5).json()
    return {p["proxy"]: p["epoch"] for p in body["proxies"]
            if p["age_seconds"] <= body["window_seconds"]}  # fmt: skip


def wait_reporting(fleet: Fleet) -> int:
    """Waits until both proxies report routing on the control plane's epoch; returns it."""
    epoch = int(fleet.control_ring("default")["epoch"])
    identities = {p.identity for p in fleet.proxies["default"]}

    def caught_up() -> bool:
        try:
            epochs = reported_epochs(fleet)
        except httpx.HTTPError:
            return False
        return all(epochs.get(i) == epoch for i in identities)

    wait_until(caught_up, 30, f"both proxies to report epoch {epoch}")
    return epoch


def status_epoch(fleet: Fleet, proxy: FleetProxy) -> int:
    return int(fleet.status(proxy)["epoch"])


def committed_epoch(output: str) -> int:
    found = COMMITTED.search(output)
    assert found, output
    return int(found.group(1))


def arrival(output: str) -> tuple[int, str]:
    """(epoch, seconds) from the line saying both proxies route on the epoch."""
    found = ARRIVED.search(output)
    assert found, output
    return int(found.group(1)), found.group(2)


def test_wait_returns_once_both_proxies_route_on_the_new_epoch(fleet: Fleet) -> None:
    before = wait_reporting(fleet)
    result = fleet.cli("backend", "drain", "mc1", "--why", "wait test", "--wait")
    proxies_now = {p.name: status_epoch(fleet, p) for p in fleet.proxies["default"]}
    epoch = committed_epoch(result.stdout)
    assert epoch > before
    assert all(e >= epoch for e in proxies_now.values()), (proxies_now, result.stdout)
    arrived, seconds = arrival(result.stdout)
    assert arrived == epoch, result.stdout
    print(f"drain --wait: both proxies on epoch {epoch} in {seconds} s")

    # Rollback waits too; under --json, stdout is the JSON answer and progress goes to stderr.
    result = fleet.cli("rollback", str(before), "--wait", "--json")
    restored = json.loads(result.stdout)["epoch"]
    proxies_now = {p.name: status_epoch(fleet, p) for p in fleet.proxies["default"]}
    assert all(e >= restored for e in proxies_now.values()), (proxies_now, result.stderr)
    assert arrival(result.stderr)[0] == restored, result.stderr
    assert fleet.control_backends("default")["mc1"]["admin"] == "active"


def test_wait_names_a_stopped_proxy_after_the_timeout(fleet: Fleet) -> None:
    before = wait_reporting(fleet)
    running, stopped = fleet.proxies["default"]
    stopped.process.stop()
    try:
        result = fleet.cli("backend", "drain", "mc2", "--wait", "--wait-timeout", "2",
                           check=False)  # fmt: skip
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        epoch = committed_epoch(result.stdout)
        assert f"epoch {epoch}: 1/2 proxies after 2 s" in lines[0], lines[0]
        assert f"behind: {stopped.identity} at epoch {before}" in lines[0], lines[0]
        assert running.identity not in lines[0]
        assert status_epoch(fleet, running) >= epoch
    finally:
        stopped.process.cont()
    # Continued, it catches up, and the next change waits for both again.
    result = fleet.cli("backend", "activate", "mc2", "--wait", "--wait-timeout", "30")
    assert arrival(result.stdout)[0] == committed_epoch(result.stdout)


def test_without_wait_nothing_is_waited_for(fleet: Fleet) -> None:
    result = fleet.cli("backend", "drain", "mc3")
    assert "proxies" not in result.stdout
    fleet.cli("backend", "activate", "mc3", "--wait")
