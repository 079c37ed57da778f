"""deploy/k8s/base/network-policies.yaml says what docs/runbook.md says it does: for every
port of every rendered pod, exactly the expected sources may connect, and nothing else in
the namespace is reachable. Sources are the rendered pods themselves plus stand-ins for
the pods outside the render (an operator's pod, Prometheus, a client elsewhere, and pods
that carry the right labels in the wrong place)."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import (
    FRONTS_RENDERS,
    NAMESPACES,
    RENDERS,
    Doc,
    containers,
    labels_of,
    of_kind,
    overlay_of,
    render,
    workloads,
)
from tests.deploy.network_policy import Pod, admits

# The overlays and the prod overlay with the native fronts enabled.
overlays = pytest.mark.parametrize("overlay", RENDERS)

OPERATOR_LABEL = "ringleader.io/operator"
# What the policies take for monitoring: the Prometheus Operator's pod label, in the
# namespace named `monitoring`.
PROMETHEUS_LABELS = {"app.kubernetes.io/name": "prometheus"}
MONITORING_NAMESPACE = "monitoring"
# A port nothing declares: default deny must cover it.
UNDECLARED_PORT = 2222

CACHE_CLIENTS = {"ringleader-proxy", "ringleader-control"}
CONTROL_CLIENTS = {
    "ringleader-proxy",
    "ringleader-control",
    "ringleader-register-backends",
    "operator",
    "prometheus",
}


def sources(docs: tuple[Doc, ...], namespace: str) -> dict[str, Pod]:
    pods = {
        w["metadata"]["name"]: Pod(w["metadata"]["name"], namespace, labels_of(w))
        for w in workloads(docs)
    }
    proxy_labels = pods["ringleader-proxy"].labels
    stand_ins = [
        Pod("operator", namespace, {OPERATOR_LABEL: "true"}),
        Pod("prometheus", MONITORING_NAMESPACE, PROMETHEUS_LABELS),
        Pod("prometheus-elsewhere", "default", PROMETHEUS_LABELS),
        Pod("grafana", MONITORING_NAMESPACE, {"app.kubernetes.io/name": "grafana"}),
        Pod("operator-elsewhere", "default", {OPERATOR_LABEL: "true"}),
        Pod("client", "shop", {"app": "shop"}),
        Pod("stranger", namespace, {"app": "stranger"}),
        # A proxy's labels in another namespace: pod selectors name this namespace only.
        Pod("impostor", "shop", proxy_labels),
    ]
    return pods | {p.name: p for p in stand_ins}


def named_ports(workload: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}


def targets(docs: tuple[Doc, ...], namespace: str) -> list[Pod]:
    return [
        Pod(w["metadata"]["name"], namespace, labels_of(w), named_ports(w)) for w in workloads(docs)
    ]


@overlays
def test_each_port_admits_exactly_its_clients(overlay: str) -> None:
    docs = render(overlay)
    namespace = NAMESPACES[overlay_of(overlay)]
    policies = of_kind(docs, "NetworkPolicy")
    clients = sources(docs, namespace)
    everyone = set(clients)
    expected = {
        ("ringleader-memcached", "memcached"): CACHE_CLIENTS,
        ("ringleader-redis", "redis"): CACHE_CLIENTS,
        ("ringleader-control", "http"): CONTROL_CLIENTS,
        # Clients are the point: any pod in the cluster, whatever its namespace.
        ("ringleader-proxy", "http"): everyone,
        ("ringleader-proxy", "admin"): {"prometheus"},
    }
    if overlay in FRONTS_RENDERS:
        # The native fronts admit clients as the data port does; the redis pool's proxy
        # has its own admin port.
        expected |= {
            ("ringleader-proxy", "memcached"): everyone,
            ("ringleader-proxy", "redis"): everyone,
            ("ringleader-proxy", "admin-redis"): {"prometheus"},
        }
    found = {
        (target.name, port_name): {
            name for name, source in clients.items() if admits(policies, target, port, source)
        }
        for target in targets(docs, namespace)
        for port_name, port in target.ports.items()
    }
    assert found == expected


@overlays
def test_everything_else_in_the_namespace_is_closed(overlay: str) -> None:
    """Default deny: undeclared ports, the Job's pods and unknown pods admit no one."""
    docs = render(overlay)
    namespace = NAMESPACES[overlay_of(overlay)]
    policies = of_kind(docs, "NetworkPolicy")
    clients = sources(docs, namespace).values()
    closed = [*targets(docs, namespace), Pod("unknown", namespace, {"app": "unknown"})]
    for target in closed:
        admitted = [s.name for s in clients if admits(policies, target, UNDECLARED_PORT, s)]
        assert not admitted, f"{target.name}:{UNDECLARED_PORT} admits {admitted}"


@overlays
def test_policies_are_ingress_only(overlay: str) -> None:
    """No egress rules, so DNS and the proxies' origin fetches keep working."""
    policies = of_kind(render(overlay), "NetworkPolicy")
    assert policies
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
        assert "egress" not in policy["spec"], policy["metadata"]["name"]


def test_evaluator_follows_the_api_rules() -> None:
    """Guards the tests above against a model that admits or refuses too much."""
    web = Pod("web", "a", {"app": "web"}, {"http": 80})
    same = Pod("same", "a", {"app": "x"})
    other = Pod("other", "b", {"app": "x"})
    assert admits([], web, 80, other), "a pod no policy selects accepts everything"
    deny = {"metadata": {"namespace": "a"}, "spec": {"podSelector": {}}}
    assert not admits([deny], web, 80, same)
    pod_peer: Doc = {
        "metadata": {"namespace": "a"},
        "spec": {
            "podSelector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web"]},
            ]},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}],
                         "ports": [{"port": "http"}]}],
        },
    }  # fmt: skip
    assert admits([deny, pod_peer], web, 80, same)
    assert not admits([deny, pod_peer], web, 81, same), "only the named port"
    assert not admits([deny, pod_peer], web, 80, other), "a bare podSelector is this namespace"
    any_namespace = {**pod_peer, "spec": {**pod_peer["spec"], "ingress": [
        {"from": [{"namespaceSelector": {}}]},
    ]}}  # fmt: skip
    assert admits([deny, any_namespace], web, 81, other)
