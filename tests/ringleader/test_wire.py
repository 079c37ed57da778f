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
    ProxiesDocument,
    ReportingProxy,
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
    epoch=st.none() | st.integers(0, 2**63),
)
proxies_documents = st.builds(
    ProxiesDocument,
    pool=names,
    window_seconds=st.floats(0.001, 1e6),
    proxies=st.lists(
        st.builds(
            ReportingProxy,
            proxy=names,
            last_seen=st.floats(0, 2e9),
            age_seconds=st.floats(0, 1e6),
            epoch=st.none() | st.integers(0, 2**63),
            verdicts=st.dictionaries(names, st.sampled_from(HEALTH), max_size=5),
        ),
        max_size=5,
    ).map(tuple),
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


@given(proxies_documents)
def test_a_proxies_document_survives_the_wire(document: ProxiesDocument) -> None:
    wire = json.loads(json.dumps(document.to_json()))
    assert wire["v"] == 1
    assert ProxiesDocument.from_json(wire) == document


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


def test_a_report_from_a_proxy_that_predates_the_epoch_has_none() -> None:
    assert "epoch" not in report()
    assert HealthReport.from_json(report()).epoch is None
    assert HealthReport.from_json(report(epoch=12)).epoch == 12
    assert HealthReport.from_json(report(epoch=None)).epoch is None


def test_reporting_proxies_are_those_within_the_window() -> None:
    def seen(name: str, age: float) -> ReportingProxy:
        return ReportingProxy(name, 1e9 - age, age, 3, {"a": "up"})

    document = ProxiesDocument("default", 6.0, (seen("p1", 0.5), seen("p2", 6.0), seen("p3", 9)))
    assert [p.proxy for p in document.reporting()] == ["p1", "p2"]


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
    ("epoch-negative", report(epoch=-1),
     "health report: epoch: expected a whole number or null, got -1"),
    ("epoch-float", report(epoch=1.5),
     "health report: epoch: expected a whole number or null, got 1.5"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), [pytest.param(*c[1:], id=c[0]) for c in BAD_REPORTS])
def test_a_malformed_health_report_is_refused_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(WireError) as caught:
        HealthReport.from_json(data)
    assert str(caught.value).startswith(message)


def proxies(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pool": "default", "window_seconds": 6.0,
        "proxies": [{"proxy": "host/127.0.0.1:8080", "last_seen": 1.7e9, "age_seconds": 0.4,
                     "epoch": 12, "verdicts": {"a": "up", "b": "down"}}],
    }  # fmt: skip
    doc.update(changes)
    return doc


def seen_proxy(**changes: Any) -> dict[str, Any]:
    return proxies(proxies=[{**proxies()["proxies"][0], **changes}])


BAD_PROXIES: list[tuple[str, object, str]] = [
    ("not-an-object", None, "proxies document: expected a JSON object, got None"),
    ("zero-window", proxies(window_seconds=0),
     "proxies document: window_seconds: expected a positive number, got 0"),
    ("proxies-object", proxies(proxies={}),
     "proxies document: proxies: expected a list, got {}"),
    ("missing-last-seen", proxies(proxies=[{"proxy": "p", "age_seconds": 1, "verdicts": {}}]),
     "proxies document: proxies[0].last_seen: missing"),
    ("age-null", seen_proxy(age_seconds=None),
     "proxies document: proxies[0].age_seconds: expected a number >= 0, got None"),
    ("epoch-string", seen_proxy(epoch="12"),
     "proxies document: proxies[0].epoch: expected a whole number or null, got '12'"),
    ("verdicts-list", seen_proxy(verdicts=["up"]),
     "proxies document: proxies[0].verdicts: expected a JSON object, got ['up']"),
    ("unknown-verdict", seen_proxy(verdicts={"a": "unknown"}),
     "proxies document: proxies[0].verdicts.a: expected one of up, down, got 'unknown'"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), [pytest.param(*c[1:], id=c[0]) for c in BAD_PROXIES])
def test_a_malformed_proxies_document_is_refused_naming_the_field(
    data: object, message: str
) -> None:
    with pytest.raises(WireError) as caught:
        ProxiesDocument.from_json(data)
    assert str(caught.value).startswith(message)


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(WireError) as caught:
        RingDocument.from_json(ring(pool=["x" * 500]))
    assert len(str(caught.value)) < 150
