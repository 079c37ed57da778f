"""The wire documents: what one plane writes the other reads back unchanged, and a
malformed document is refused with its field named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringleader.wire import (
    HEALTH,
    PROBE_STATES,
    ActiveMember,
    BackendObservation,
    HealthReport,
    RingDocument,
    RingMember,
    WireError,
)

names = st.text(st.sampled_from("abcxyz019-_."), min_size=1, max_size=12)
weights = st.integers(1, 10_000)


@st.composite
def members(draw: st.DrawFn) -> tuple[str, str, int]:
    name, weight = draw(names), draw(weights)
    port = draw(st.integers(1, 65535))
    return name, f"memcached://10.0.0.1:{port}?name={name}&weight={weight}", weight


ring_documents = st.builds(
    RingDocument,
    pool=names,
    epoch=st.integers(0, 2**63),
    hash=st.sampled_from(["fnv1a_64", "md5"]),
    distribution=st.just("ketama"),
    replicas=st.integers(1, 5),
    backends=st.lists(members().map(lambda m: RingMember(*m)), max_size=5).map(tuple),
    active=st.lists(
        st.tuples(members(), st.sampled_from(HEALTH)).map(lambda m: ActiveMember(*m[0], m[1])),
        max_size=5,
    ).map(tuple),
)
seconds = st.none() | st.floats(0, 1e9, allow_nan=False)
health_reports = st.builds(
    HealthReport,
    proxy=names,
    backends=st.dictionaries(
        names,
        st.builds(
            BackendObservation,
            state=st.sampled_from(PROBE_STATES),
            since=seconds,
            last_error=st.none() | st.text(max_size=20),
            rtt_seconds=seconds,
            consecutive_failures=st.integers(0, 100),
        ),
        max_size=5,
    ),
    interval=st.none() | st.floats(0.001, 1e6),
)


@given(ring_documents)
def test_a_ring_document_survives_the_wire(document: RingDocument) -> None:
    wire = json.loads(json.dumps(document.to_json()))
    assert wire["v"] == 1
    assert RingDocument.from_json(wire) == document


@given(health_reports)
def test_a_health_report_survives_the_wire(report: HealthReport) -> None:
    wire = json.loads(json.dumps(report.to_json()))
    assert wire["v"] == 1
    assert HealthReport.from_json(wire) == report


URL = "memcached://10.0.0.1:11211?name=a&weight=2"


def ring(**changes: Any) -> dict[str, Any]:
    """A ring document as a node without `v` wrote it."""
    doc = {
        "pool": "default", "epoch": 7, "hash": "fnv1a_64", "distribution": "ketama",
        "replicas": 1, "backends": [{"name": "a", "url": URL, "weight": 2}],
        "active": [{"name": "a", "url": URL, "weight": 2, "health": "up"}],
    }  # fmt: skip
    doc.update(changes)
    return doc


def report(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "proxy": "host/127.0.0.1:8080", "interval": 2.0,
        "backends": {"a": {"state": "down", "since": 5.0, "last_error": "refused",
                           "rtt_seconds": None, "consecutive_failures": 3}},
    }  # fmt: skip
    doc.update(changes)
    return doc


def test_documents_without_a_version_are_version_one() -> None:
    document = RingDocument.from_json(ring())
    assert document.epoch == 7
    assert document.backends == (RingMember("a", URL, 2),)
    assert document.to_json() == {"v": 1, **ring()}
    seen = HealthReport.from_json(report()).backends["a"]
    assert seen == BackendObservation("down", 5.0, "refused", None, 3)


def test_optional_fields_take_their_defaults() -> None:
    document = RingDocument.from_json({k: v for k, v in ring().items() if k != "active"})
    assert document.active == ()
    minimal = HealthReport.from_json({"proxy": "p", "backends": {"a": {"state": "up"}}})
    assert minimal == HealthReport("p", {"a": BackendObservation("up")}, None)


def test_unknown_fields_are_ignored() -> None:
    assert RingDocument.from_json(ring(shards=3)) == RingDocument.from_json(ring())


def test_the_spec_is_the_backend_url_parsed() -> None:
    spec = RingDocument.from_json(ring()).backends[0].spec()
    assert (spec.name, spec.port, spec.weight) == ("a", 11211, 2)


BAD_RINGS: list[tuple[str, object, str]] = [
    ("not-an-object", [1], "ring document: expected a JSON object, got [1]"),
    ("missing-epoch", {k: v for k, v in ring().items() if k != "epoch"},
     "ring document: epoch: missing"),
    ("epoch-string", ring(epoch="7"), "ring document: epoch: expected a whole number, got '7'"),
    ("epoch-negative", ring(epoch=-1), "ring document: epoch: expected a whole number, got -1"),
    ("epoch-bool", ring(epoch=True), "ring document: epoch: expected a whole number, got True"),
    ("unknown-hash", ring(hash="crc"),
     "ring document: hash: expected one of fnv1a_64, md5, got 'crc'"),
    ("backends-not-list", ring(backends={}), "ring document: backends: expected a list, got {}"),
    ("backend-not-object", ring(backends=["a"]),
     "ring document: backends[0]: expected a JSON object, got 'a'"),
    ("bad-weight", ring(backends=[{"name": "a", "url": URL, "weight": 2}] * 2
                                 + [{"name": "c", "url": URL, "weight": "x"}]),
     "ring document: backends[2].weight: expected a positive integer, got 'x'"),
    ("zero-weight", ring(backends=[{"name": "a", "url": URL, "weight": 0}]),
     "ring document: backends[0].weight: expected a positive integer, got 0"),
    ("missing-url", ring(backends=[{"name": "a", "weight": 1}]),
     "ring document: backends[0].url: missing"),
    ("bad-url", ring(backends=[{"name": "a", "url": "http://a:80", "weight": 1}]),
     "ring document: backends[0].url: backend URL 'http://a:80': scheme must be"),
    ("bad-health", ring(active=[{"name": "a", "url": URL, "weight": 2, "health": "sick"}]),
     "ring document: active[0].health: expected one of up, down, got 'sick'"),
    ("future-version", ring(v=2), "ring document: v: unsupported version 2; this node reads 1"),
    ("version-string", ring(v="1"), "ring document: v: unsupported version '1'"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), [pytest.param(*c[1:], id=c[0]) for c in BAD_RINGS])
def test_a_malformed_ring_document_is_refused_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(WireError) as caught:
        RingDocument.from_json(data)
    assert str(caught.value).startswith(message)


def observation(**changes: Any) -> dict[str, Any]:
    return report(backends={"a": {"state": "up", **changes}})


BAD_REPORTS: list[tuple[str, object, str]] = [
    ("not-an-object", "x", "health report: expected a JSON object, got 'x'"),
    ("missing-proxy", {"backends": {}}, "health report: proxy: missing"),
    ("empty-proxy", report(proxy=""), "health report: proxy: expected a non-empty string, got ''"),
    ("backends-list", report(backends=[]),
     "health report: backends: expected a JSON object, got []"),
    ("backend-not-object", report(backends={"a": "up"}),
     "health report: backends['a']: expected a JSON object, got 'up'"),
    ("missing-state", report(backends={"a": {}}), "health report: backends['a'].state: missing"),
    ("bad-state", observation(state="sick"),
     "health report: backends['a'].state: expected one of unknown, up, down, got 'sick'"),
    ("since-string", observation(since="now"),
     "health report: backends['a'].since: expected a number >= 0 or null, got 'now'"),
    ("error-number", observation(last_error=5),
     "health report: backends['a'].last_error: expected a string or null, got 5"),
    ("failures-float", observation(consecutive_failures=1.5),
     "health report: backends['a'].consecutive_failures: expected a whole number, got 1.5"),
    ("zero-interval", report(interval=0),
     "health report: interval: expected a positive number or null, got 0"),
    ("future-version", report(v=3), "health report: v: unsupported version 3"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), [pytest.param(*c[1:], id=c[0]) for c in BAD_REPORTS])
def test_a_malformed_health_report_is_refused_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(WireError) as caught:
        HealthReport.from_json(data)
    assert str(caught.value).startswith(message)


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(WireError) as caught:
        RingDocument.from_json(ring(pool=["x" * 500]))
    assert len(str(caught.value)) < 150
