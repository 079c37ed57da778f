"""Hot-path metrics that cost a fraction of a microsecond, merged across worker processes.

prometheus_client's Histogram.observe costs ~1.3 us in one process and ~2.4 us in its
multiprocess mode (measured here; see BENCHMARKS.md), several times per request. These
families keep plain numbers per process instead. Workers ship `snapshot()`s to the
supervisor, which merges them and exposes one set of totals through a prometheus_client
collector, so `/metrics` reports the proxy, not one worker's share.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

Labels = tuple[str, ...]
# A sample is [value] for counters and gauges, and [*bucket_counts, sum] for histograms,
# so merging is element-wise whatever the type.
Sample = list[float]
# family name -> label values -> sample
Snapshot = dict[str, dict[Labels, Sample]]
GaugeMerge = Literal["sum", "min", "max"]

# Sub-millisecond resolution for loopback cache traffic, up to the request timeouts.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
)  # fmt: skip


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)


class HistogramChild:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # counts[i] observations fell in (bounds[i-1], bounds[i]]; the last slot is +Inf.
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


@dataclass
class _Family:
    name: str
    help: str
    labelnames: tuple[str, ...]

    def _check(self, values: Sequence[str]) -> Labels:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return tuple(values)


@dataclass
class CounterFamily(_Family):
    children: dict[Labels, CounterChild] = field(default_factory=dict)

    def labels(self, *values: str) -> CounterChild:
        key = self._check(values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = CounterChild()
        return child


@dataclass
class GaugeFamily(_Family):
    merge: GaugeMerge = "sum"
    children: dict[Labels, GaugeChild] = field(default_factory=dict)

    def labels(self, *values: str) -> GaugeChild:
        key = self._check(values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = GaugeChild()
        return child

    def remove(self, *values: str) -> None:
        self.children.pop(self._check(values), None)


@dataclass
class HistogramFamily(_Family):
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    children: dict[Labels, HistogramChild] = field(default_factory=dict)

    def labels(self, *values: str) -> HistogramChild:
        key = self._check(values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = HistogramChild(self.buckets)
        return child


Family = CounterFamily | GaugeFamily | HistogramFamily


class MetricSet:
    """The families of one process. Definitions are shared code, so every process of a
    proxy declares the same families and the supervisor can merge by name."""

    def __init__(self, families: Iterable[Family]) -> None:
        self.families = {f.name: f for f in families}
        for family in self.families.values():
            # Exported as 0 from the start, not absent. Not min/max gauges: a process that
            # never set one has no value, and a default 0 would win every min.
            if not family.labelnames and not (
                isinstance(family, GaugeFamily) and family.merge != "sum"
            ):
                family.labels()

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for name, family in self.families.items():
            if isinstance(family, HistogramFamily):
                out[name] = {k: [*c.counts, c.total] for k, c in family.children.items()}
            else:
                out[name] = {k: [c.value] for k, c in family.children.items()}
        return out


class MergedMetrics:
    """The supervisor's view: the sum of every process's snapshot.

    Counters and histograms of processes that exited are kept in `retired`, so totals never
    go down when a worker is restarted. Gauges of exited processes are dropped.
    """

    def __init__(self, definitions: MetricSet) -> None:
        self._definitions = definitions
        self._live: dict[int, Snapshot] = {}
        self._retired: Snapshot = {}

    def update(self, process: int, snapshot: Snapshot) -> None:
        self._live[process] = snapshot

    def retire(self, process: int) -> None:
        snapshot = self._live.pop(process, None)
        if snapshot is None:
            return
        for name, series in snapshot.items():
            family = self._definitions.families.get(name)
            if family is not None and not isinstance(family, GaugeFamily):
                _merge_into(self._retired.setdefault(name, {}), series, _add)

    def merged(self) -> Snapshot:
        out: Snapshot = {}
        for name, family in self._definitions.families.items():
            target: dict[Labels, Sample] = {}
            combine = _add
            if isinstance(family, GaugeFamily):
                combine = {"sum": _add, "min": _min, "max": _max}[family.merge]
            else:
                _merge_into(target, self._retired.get(name, {}), _add)
            for snapshot in self._live.values():
                _merge_into(target, snapshot.get(name, {}), combine)
            out[name] = target
        return out


def _add(a: float, b: float) -> float:
    return a + b


def _min(a: float, b: float) -> float:
    return min(a, b)


def _max(a: float, b: float) -> float:
    return max(a, b)


def _merge_into(
    target: dict[Labels, Sample],
    series: Mapping[Labels, Sample],
    combine: Callable[[float, float], float],
) -> None:
    for labels, sample in series.items():
        old = target.get(labels)
        target[labels] = (
            list(sample)
            if old is None
            else [combine(a, b) for a, b in zip(old, sample, strict=True)]
        )


class MergedCollector:
    """Exposes merged snapshots through prometheus_client (a custom collector)."""

    def __init__(self, definitions: MetricSet, source: MergedMetrics) -> None:
        self._definitions = definitions
        self._source = source

    def collect(self) -> Iterator[Metric]:
        merged = self._source.merged()
        for name, family in self._definitions.families.items():
            series = merged.get(name, {})
            labelnames = list(family.labelnames)
            metric: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if isinstance(family, HistogramFamily):
                metric = HistogramMetricFamily(name, family.help, labels=labelnames)
                bounds = [*map(_bound_label, family.buckets), "+Inf"]
                for labels, sample in series.items():
                    cumulative = list(itertools.accumulate(sample[:-1]))
                    metric.add_metric(
                        list(labels), list(zip(bounds, cumulative, strict=True)), sample[-1]
                    )
            else:
                kind = (
                    CounterMetricFamily if isinstance(family, CounterFamily) else GaugeMetricFamily
                )
                metric = kind(name, family.help, labels=labelnames)
                for labels, sample in series.items():
                    metric.add_metric(list(labels), sample[0])
            yield metric


def _bound_label(bound: float) -> str:
    return repr(bound)
