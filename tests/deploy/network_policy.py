"""Kubernetes NetworkPolicy ingress semantics, for asking a rendered set of policies who may
connect to a pod's port.

The rules, from the networking.k8s.io/v1 API: a pod selected by no Ingress policy accepts
everything; a selected pod accepts a connection that some rule of some selecting policy
admits (policies add up, none subtracts). A rule admits when its `ports` (absent: all)
include the port and its `from` (absent: everyone) includes the source. A peer with only a
podSelector means pods of the policy's own namespace. Anything this module does not model
(ipBlock, endPort, non-TCP protocols, unknown selector operators) fails loudly instead of
being guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tests.deploy.manifests import Doc

# Set by Kubernetes on every namespace (1.21+): lets a selector name a namespace.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)
    """Named container ports, which a policy may name instead of a number."""


def label_selector_matches(selector: Doc, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: the empty selector matches everything."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise AssertionError(f"unknown selector operator {operator}")
        if not ok:
            return False
    return True


def _isolates_ingress(policy: Doc) -> bool:
    spec = policy["spec"]
    # Without policyTypes, a policy is an Ingress policy (and Egress too if it has egress).
    return "Ingress" in spec.get("policyTypes", ["Ingress"])


def _port_matches(item: Doc, target: Pod, port: int) -> bool:
    assert item.get("protocol", "TCP") == "TCP", f"unmodelled protocol in {item}"
    assert "endPort" not in item, f"unmodelled endPort in {item}"
    if "port" not in item:
        return True
    wanted = item["port"]
    if isinstance(wanted, int):
        return wanted == port
    return target.ports.get(wanted) == port


def _peer_admits(peer: Doc, policy_namespace: str, source: Pod) -> bool:
    assert "ipBlock" not in peer, f"unmodelled ipBlock peer {peer}"
    if "namespaceSelector" in peer:
        namespace_labels = {NAMESPACE_NAME_LABEL: source.namespace}
        if not label_selector_matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return label_selector_matches(peer.get("podSelector", {}), source.labels)


def admits(policies: Iterable[Doc], target: Pod, port: int, source: Pod) -> bool:
    """Whether `source` may open a TCP connection to `target`'s `port`."""
    selecting = [
        p for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and _isolates_ingress(p)
        and label_selector_matches(p["spec"]["podSelector"], target.labels)
    ]  # fmt: skip
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(_port_matches(item, target, port) for item in ports):
                continue
            peers = rule.get("from")
            if not peers or any(
                _peer_admits(peer, policy["metadata"]["namespace"], source) for peer in peers
            ):
                return True
    return False
