"""dashboards/grafana: stable uids, a datasource variable used by every query,
$__rate_interval in every rate, and panels for each signal operators need. Whether the
queries run against real metrics is tests/dashboards/test_live_prometheus.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards.expressions import dashboard_expressions, dashboards, panels

DATASOURCE = "${datasource}"
# Range functions over counters and histograms; each must use Grafana's $__rate_interval
# so the window always covers enough scrapes at any zoom level.
RANGE_CALL = re.compile(r"\b(rate|irate|increase)\(([^()]*(?:\([^()]*\))?[^()]*)\)")

ALL = list(dashboards().items())
ids = [path.name for path, _ in ALL]


@pytest.mark.parametrize(("path", "dashboard"), ALL, ids=ids)
def test_stable_uid_and_datasource_variable(path: Path, dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]), "a fixed, URL-safe uid"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]


def test_uids_are_unique() -> None:
    uids = [d["uid"] for _, d in ALL]
    assert len(uids) == len(set(uids))
    for _, dashboard in ALL:
        panel_ids = [p["id"] for p in panels(dashboard)]
        assert len(panel_ids) == len(set(panel_ids))


def test_rates_use_rate_interval() -> None:
    checked = 0
    for expression in dashboard_expressions():
        calls = RANGE_CALL.findall(expression.promql)
        # Every range function was found by the pattern, so none goes unchecked.
        assert len(calls) == len(re.findall(r"\b(?:rate|irate|increase)\(", expression.promql))
        for _, inner in calls:
            assert inner.endswith("[$__rate_interval]"), f"{expression.where}: {inner}"
            checked += 1
    assert checked > 0


def test_panels_cover_the_signals() -> None:
    exprs = [e.promql for e in dashboard_expressions()]

    def has(*parts: str) -> bool:
        return any(all(p in e for p in parts) for e in exprs)

    # Proxy rate, errors and p50/p99 duration, by route.
    assert has("sum by (route)", "rate(ringleader_proxy_responses_total")
    assert has("by (route", 'code=~"5.."', "ringleader_proxy_responses_total")
    for quantile in ("histogram_quantile(0.5,", "histogram_quantile(0.99,"):
        assert has(quantile, "by (route, le)", "ringleader_proxy_request_duration_seconds_bucket")
    # Cache hit ratio.
    assert has('result="hit"', "/", "ringleader_proxy_cache_lookups_total")
    # Backend health and operation latency.
    assert has("ringleader_backend_up")
    assert has("histogram_quantile(0.99,", "ringleader_backend_request_duration_seconds_bucket")
    # The epoch of every proxy, kept per instance so disagreement shows.
    assert has("by (namespace, job, instance)", "ringleader_proxy_ring_epoch")
    # Control plane: leader, term, commit/apply lag, leader changes, fsync latency.
    assert has("ringleader_raft_leader{")
    assert has("ringleader_raft_term")
    assert has("ringleader_raft_commit_index", "-", "ringleader_raft_applied_index")
    assert has("ringleader_raft_leader_changes_total")
    assert has("histogram_quantile(0.99,", "ringleader_raft_fsync_duration_seconds_bucket")
    # Event loop stalls, which late heartbeats and so elections follow.
    assert has("ringleader_control_tick_lateness_seconds_count", "-",
               'ringleader_control_tick_lateness_seconds_bucket', 'le="0.1"')  # fmt: skip
