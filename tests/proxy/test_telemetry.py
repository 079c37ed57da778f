"""Per-process metric families, merged across worker processes by the supervisor."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import ProxyMetrics
from proxy.telemetry import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    MergedCollector,
    MergedMetrics,
    MetricSet,
)


def families() -> MetricSet:
    """A fresh set of definitions, as every process builds its own."""
    return MetricSet([
        CounterFamily("reqs_total", "Requests.", ("code",)),
        HistogramFamily("latency_seconds", "Latency.", (), buckets=(0.1, 1.0)),
        GaugeFamily("inflight", "In flight.", (), merge="sum"),
        GaugeFamily("epoch", "Ring epoch.", (), merge="min"),
        GaugeFamily("peak", "Peak.", (), merge="max"),
    ])  # fmt: skip


def process(reqs: float = 0, latencies: tuple[float, ...] = (), inflight: float | None = None,
            epoch: float | None = None, peak: float | None = None) -> MetricSet:  # fmt: skip
    m = families()
    if reqs:
        m.families["reqs_total"].labels("200").inc(reqs)  # type: ignore[union-attr]
    hist = m.families["latency_seconds"]
    assert isinstance(hist, HistogramFamily)
    for value in latencies:
        hist.labels().observe(value)
    for name, setting in (("inflight", inflight), ("epoch", epoch), ("peak", peak)):
        if setting is not None:
            gauge = m.families[name]
            assert isinstance(gauge, GaugeFamily)
            gauge.labels().set(setting)
    return m


def exposition(merged: MergedMetrics) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(MergedCollector(families(), merged))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_counters_and_histograms_sum_across_processes() -> None:
    merged = MergedMetrics(families())
    merged.update(101, process(reqs=3, latencies=(0.05, 0.5)).snapshot())
    merged.update(102, process(reqs=4, latencies=(0.05, 5.0)).snapshot())
    out = merged.merged()
    assert out["reqs_total"] == {("200",): [7.0]}
    # Buckets (<=0.1, <=1.0, +Inf) then the sum.
    assert out["latency_seconds"] == {(): [2, 1, 1, pytest.approx(5.6)]}


def test_a_process_snapshot_replaces_its_previous_one() -> None:
    merged = MergedMetrics(families())
    merged.update(101, process(reqs=3).snapshot())
    merged.update(101, process(reqs=5).snapshot())
    assert merged.merged()["reqs_total"] == {("200",): [5.0]}


def test_retire_keeps_counters_and_histograms_so_totals_never_go_down() -> None:
    merged = MergedMetrics(families())
    merged.update(101, process(reqs=3, latencies=(0.5,), inflight=2, epoch=7, peak=9).snapshot())
    merged.update(102, process(reqs=4, latencies=(0.05,), inflight=1, epoch=8, peak=1).snapshot())
    merged.retire(101)
    out = merged.merged()
    assert out["reqs_total"] == {("200",): [7.0]}
    assert out["latency_seconds"] == {(): [1, 1, 0, pytest.approx(0.55)]}
    # Gauges of an exited process are dropped: they describe a process that is gone.
    assert out["inflight"] == {(): [1.0]}
    assert out["epoch"] == {(): [8.0]}
    assert out["peak"] == {(): [1.0]}
    # A restarted worker starts from zero; the retired share stays counted.
    merged.update(103, process(reqs=1).snapshot())
    assert merged.merged()["reqs_total"] == {("200",): [8.0]}


def test_retire_twice_or_of_an_unknown_process_counts_nothing_twice() -> None:
    merged = MergedMetrics(families())
    merged.update(101, process(reqs=3).snapshot())
    merged.retire(101)
    merged.retire(101)
    merged.retire(999)
    assert merged.merged()["reqs_total"] == {("200",): [3.0]}


def test_gauges_merge_by_their_declared_rule() -> None:
    merged = MergedMetrics(families())
    merged.update(1, process(inflight=2, epoch=5, peak=3).snapshot())
    merged.update(2, process(inflight=3, epoch=4, peak=8).snapshot())
    merged.update(3, process(inflight=1, epoch=6, peak=2).snapshot())
    out = merged.merged()
    assert (out["inflight"], out["epoch"], out["peak"]) == (
        {(): [6.0]}, {(): [4.0]}, {(): [8.0]})  # fmt: skip


def test_a_process_that_never_set_a_min_or_max_gauge_does_not_drag_it_to_zero() -> None:
    # The supervisor knows the ring size; workers may not set it. min(5, unset) is 5.
    merged = MergedMetrics(families())
    merged.update(1, process(epoch=5, peak=5).snapshot())
    merged.update(2, process().snapshot())
    out = merged.merged()
    assert (out["epoch"], out["peak"]) == ({(): [5.0]}, {(): [5.0]})


def test_label_less_counters_and_sum_gauges_are_exported_from_the_start() -> None:
    merged = MergedMetrics(families())
    merged.update(1, families().snapshot())  # a process that has done nothing yet
    out = exposition(merged)
    assert out["latency_seconds_count"] == 0.0
    assert "epoch" not in out  # a min gauge nobody set has no value
    assert out["inflight"] == 0.0


def test_exposition_parses_as_prometheus_text_with_merged_values() -> None:
    merged = MergedMetrics(families())
    merged.update(1, process(reqs=2, latencies=(0.05, 0.5), inflight=1, epoch=3).snapshot())
    merged.update(2, process(reqs=5, latencies=(2.0,), inflight=2, epoch=4).snapshot())
    out = exposition(merged)
    assert out["reqs_total{code=200}"] == 7.0
    assert out["latency_seconds_bucket{le=0.1}"] == 1.0
    assert out["latency_seconds_bucket{le=1.0}"] == 2.0  # cumulative
    assert out["latency_seconds_bucket{le=+Inf}"] == 3.0
    assert out["latency_seconds_count"] == 3.0
    assert out["latency_seconds_sum"] == pytest.approx(2.55)
    assert out["inflight"] == 3.0
    assert out["epoch"] == 3.0


def test_histogram_bucket_bounds_are_inclusive() -> None:
    m = families()
    hist = m.families["latency_seconds"]
    assert isinstance(hist, HistogramFamily)
    for value in (0.1, 1.0, 1.0000001):
        hist.labels().observe(value)
    assert m.snapshot()["latency_seconds"][()][:3] == [1, 1, 1]


def test_wrong_label_count_is_refused() -> None:
    with pytest.raises(ValueError, match="takes labels"):
        CounterFamily("c_total", "C.", ("a", "b")).labels("only-one")


def test_proxy_metrics_expose_every_family_through_the_merged_collector() -> None:
    metrics = ProxyMetrics()
    metrics.responses.labels("kv", "200").inc()
    metrics.backend_duration.labels("b1", "get").observe(0.001)
    merged = MergedMetrics(metrics.set)
    merged.update(1, metrics.set.snapshot())
    registry = CollectorRegistry()
    registry.register(MergedCollector(metrics.set, merged))
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    # prometheus_client strips _total from counter family names.
    expected = {name.removesuffix("_total") for name in metrics.set.families}
    assert names == expected
