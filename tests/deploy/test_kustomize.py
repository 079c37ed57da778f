"""deploy/k8s: each overlay renders with `kubectl kustomize`, every built-in object validates
strictly against the Kubernetes OpenAPI schemas, and the objects fit together the way
docs/runbook.md and the process contracts say (probes, quorum, draining, IDs, tokens)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from control import service
from proxy.worker import DRAIN_SECONDS
from ringleader.cli import build_parser
from tests.dashboards.rules import load_rules
from tests.deploy.containers import (
    FAKE_TOKEN,
    SecretMounts,
    proxy_config_of,
    registered_backends,
    run_with_stub,
)
from tests.deploy.manifests import (
    CRD_KINDS,
    K8S,
    NAMESPACES,
    OVERLAYS,
    PROD_WITH_FRONTS,
    RENDERS,
    ROOT,
    Doc,
    container_named,
    containers,
    env_value,
    find,
    labels_of,
    of_kind,
    overlay_of,
    pod_spec,
    port_number,
    render,
    selects,
    service_named,
    workloads,
)

# The oldest Kubernetes minor we support (autoscaling/v2 and policy/v1 are GA since 1.23,
# kubernetes-validate ships 1.25+) and the newest schemas the package has.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
# After the workers' drain the supervisor waits this much more before killing them
# (proxy/server.py: Supervisor.stop_workers).
SUPERVISOR_MARGIN = 2
RELEASE_LABEL = {"dev": "prometheus", "prod": "kube-prometheus-stack"}
# Kubernetes' default minimum for "not a system user" and checkov's CKV_K8S_40.
HIGH_UID = 10000
# The workloads that run `ringleader` and so need the cluster token.
TOKEN_USERS = {
    "StatefulSet": "ringleader-control",
    "Deployment": "ringleader-proxy",
    "Job": "ringleader-register-backends",
}

overlays = pytest.mark.parametrize("overlay", OVERLAYS)
# The overlays and the prod overlay with the native fronts enabled.
renders = pytest.mark.parametrize("overlay", RENDERS)


def http_probe(container: Doc, kind: str) -> tuple[str, int]:
    probe = container.get(kind)
    assert probe is not None, f"{container['name']} has no {kind}"
    get = probe["httpGet"]
    return get["path"], port_number(container, get["port"])


def parse_ringleader(argv: list[str]) -> Any:
    return build_parser().parse_args(argv)


# -- rendering and schema validation ----------------------------------------------------


@overlays
def test_overlay_renders_into_its_namespace(overlay: str) -> None:
    docs = render(overlay)
    namespace = NAMESPACES[overlay]
    find(docs, "Namespace", namespace)
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


@renders
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_strictly(overlay: str, version: str) -> None:
    skipped: set[str] = set()
    errors: list[str] = []
    for doc in render(overlay):
        if doc["kind"] in CRD_KINDS:
            skipped.add(doc["kind"])  # checked structurally in test_monitoring_objects
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            # Only the message: the exception's repr includes the whole schema.
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, f"overlays/{overlay} against Kubernetes {version}:\n" + "\n".join(errors)
    assert skipped == CRD_KINDS


def test_validation_is_strict() -> None:
    """Guards the test above: an unknown field must be an error, not ignored."""
    bogus = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "publishNotReadyAdresses": True},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bogus, K8S_VERSIONS[0], strict=True)


# -- control plane ----------------------------------------------------------------------


@overlays
def test_control_statefulset(overlay: str) -> None:
    docs = render(overlay)
    sts = find(docs, "StatefulSet", "ringleader-control")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    # OrderedReady would deadlock: pod 1 waits for pod 0 to be Ready, which needs a leader.
    assert spec["podManagementPolicy"] == "Parallel"
    peer = service_named(docs, spec["serviceName"])
    assert peer["spec"]["clusterIP"] == "None"
    assert peer["spec"]["publishNotReadyAddresses"] is True
    assert selects(peer["spec"]["selector"], labels_of(sts))
    client = service_named(docs, "ringleader-control")
    assert client["spec"].get("clusterIP") != "None"
    assert selects(client["spec"]["selector"], labels_of(sts))

    (container,) = containers(sts)
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert claims
    assert claims <= mounted, "every node keeps its log on its own volume"
    port = port_number(container, "http")
    assert http_probe(container, "livenessProbe") == ("/healthz", port)
    assert http_probe(container, "readinessProbe") == ("/readyz", port)
    assert http_probe(container, "startupProbe") == ("/healthz", port)


@overlays
def test_control_anti_affinity(overlay: str) -> None:
    sts = find(render(overlay), "StatefulSet", "ringleader-control")
    anti = pod_spec(sts)["affinity"]["podAntiAffinity"]
    if overlay == "prod":
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti
        terms = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    else:
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
        terms = [
            t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
        ]
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and selects(t["labelSelector"]["matchLabels"], labels_of(sts))
        for t in terms
    )


@overlays
def test_control_pdb_keeps_quorum(overlay: str) -> None:
    docs = render(overlay)
    sts = find(docs, "StatefulSet", "ringleader-control")
    pdb = find(docs, "PodDisruptionBudget", "ringleader-control")
    replicas = sts["spec"]["replicas"]
    quorum = replicas // 2 + 1
    if "minAvailable" in pdb["spec"]:
        assert pdb["spec"]["minAvailable"] == quorum
    else:
        assert pdb["spec"]["maxUnavailable"] == replicas - quorum
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels_of(sts))


@overlays
def test_control_command_derives_ids_from_ordinals(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the container's real shell wrapper for every pod name and parses what it would
    exec with the real `ringleader control` argument handling."""
    docs = render(overlay)
    sts = find(docs, "StatefulSet", "ringleader-control")
    (container,) = containers(sts)
    port = port_number(container, "http")
    peer_service = sts["spec"]["serviceName"]
    replicas = sts["spec"]["replicas"]
    expected_peers = {
        i + 1: f"http://ringleader-control-{i}.{peer_service}:{port}" for i in range(replicas)
    }
    # The token must come from the mounted file, not from the environment.
    monkeypatch.delenv("RINGLEADER_TOKEN", raising=False)
    secrets = SecretMounts.write(sts, container, tmp_path)
    for ordinal in range(replicas):
        data_dir = tmp_path / f"data-{ordinal}" / "raft"
        (argv,) = run_with_stub(
            container, f"ringleader-control-{ordinal}", tmp_path,
            {"RINGLEADER_DATA_DIR": str(data_dir)},
        )  # fmt: skip
        config = service.build_config(parse_ringleader(secrets.localize(argv)))
        assert config.token == FAKE_TOKEN
        assert config.node_id == ordinal + 1
        assert config.peers == expected_peers
        assert config.listen.port == port
        assert config.data_dir == str(data_dir)
        assert data_dir.is_dir(), "the wrapper creates the data directory on the volume"
    assert env_value(container, "RINGLEADER_DATA_DIR").startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data")
    )


# -- proxies ----------------------------------------------------------------------------


@renders
def test_proxy_deployment_probes_and_draining(overlay: str) -> None:
    docs = render(overlay)
    deployment = find(docs, "Deployment", "ringleader-proxy")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    for container in containers(deployment):
        (admin_name,) = [p["name"] for p in container["ports"] if p["name"].startswith("admin")]
        admin = port_number(container, admin_name)
        assert http_probe(container, "readinessProbe") == ("/readyz", admin)
        assert http_probe(container, "livenessProbe") == ("/healthz", admin)
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        delay = int(pre_stop[1])
        assert delay >= 5, "endpoints need a few seconds to drop the pod before SIGTERM"
        assert grace >= delay + DRAIN_SECONDS + SUPERVISOR_MARGIN


@renders
def test_proxy_args_parse(overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(overlay)
    deployment = find(docs, "Deployment", "ringleader-proxy")
    container = container_named(deployment, "proxy")
    monkeypatch.delenv("RINGLEADER_TOKEN", raising=False)
    config = proxy_config_of(deployment, container, tmp_path)
    assert config.token == FAKE_TOKEN
    assert config.listen is not None, "the proxies serve HTTP on their data port"
    assert config.listen.port == port_number(container, "http")
    assert config.admin.port == port_number(container, "admin")
    client = service_named(docs, "ringleader-control")
    client_port = client["spec"]["ports"][0]["port"]
    assert list(config.control) == [f"http://ringleader-control:{client_port}"]


@overlays
def test_proxy_hpa_and_pdb(overlay: str) -> None:
    docs = render(overlay)
    deployment = find(docs, "Deployment", "ringleader-proxy")
    hpa = find(docs, "HorizontalPodAutoscaler", "ringleader-proxy")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "ringleader-proxy")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if overlay == "prod":
        assert hpa["spec"]["minReplicas"] >= 2, "one proxy is a single point of failure"
    pdb = find(docs, "PodDisruptionBudget", "ringleader-proxy")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels_of(deployment))
    service = service_named(docs, "ringleader-proxy")
    assert selects(service["spec"]["selector"], labels_of(deployment))


# -- every workload ---------------------------------------------------------------------


@renders
def test_resources_probes_and_security(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] >= HIGH_UID, f"{name}: low UIDs may be host users"
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][section]), (
                    f"{name}/{container['name']} lacks {section}"
                )
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            if workload["kind"] != "Job":
                assert "readinessProbe" in container, f"{name}/{container['name']}"
                assert "livenessProbe" in container, f"{name}/{container['name']}"


@renders
def test_selectors_match_workloads(overlay: str) -> None:
    docs = render(overlay)
    templates = [labels_of(w) for w in workloads(docs)]
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in of_kind(docs, kind):
            spec = doc["spec"]
            selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
            assert any(selects(selector, t) for t in templates), doc["metadata"]["name"]


def token_file_source(workload: Doc, container: Doc, token_file: str) -> tuple[str, str]:
    """The (Secret, key) behind the file at `token_file`, mounted read-only and readable
    by the pod's group only."""
    spec = pod_spec(workload)
    for mount in container["volumeMounts"]:
        directory = mount["mountPath"].rstrip("/") + "/"
        if not token_file.startswith(directory):
            continue
        assert mount.get("readOnly") is True, f"{mount['name']} must be mounted read-only"
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        secret = volume["secret"]
        assert secret["defaultMode"] & 0o007 == 0, "the token file is not world-readable"
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
        (item,) = [i for i in secret["items"] if i["path"] == token_file[len(directory) :]]
        return secret["secretName"], item["key"]
    raise AssertionError(f"{token_file} is not inside a mounted volume")


@renders
def test_token_is_a_file_from_a_secret(overlay: str, tmp_path: Path) -> None:
    """Every `ringleader` process gets --token-file pointing into the same mounted Secret,
    and no container has the token (or any Secret) in its environment."""
    docs = render(overlay)
    sources: set[tuple[str, str]] = set()
    for kind, name in TOKEN_USERS.items():
        workload = find(docs, kind, name)
        for container in containers(workload):
            # run_with_stub builds the env from the manifest and rejects Secret references.
            where = f"{name}/{container['name']}"
            argvs = run_with_stub(container, f"{name}-0", tmp_path / where)
            assert argvs, f"{where} runs no ringleader command"
            for argv in argvs:
                token_file = parse_ringleader(argv).token_file
                assert token_file, f"{where}: {argv} lacks --token-file"
                sources.add(token_file_source(workload, container, token_file))
    assert len(sources) == 1, f"every process must use the same Secret: {sources}"
    ((name, key),) = sources
    if overlay_of(overlay) == "dev":
        secret = find(docs, "Secret", name)
        assert key in secret["data"]
    else:
        # Created out of band; the runbook says how.
        assert not of_kind(docs, "Secret")
        assert name == "ringleader-token"
        assert "ringleader-token" in (ROOT / "docs" / "runbook.md").read_text()


@renders
def test_ringleader_image_set_by_overlay(overlay: str) -> None:
    kustomization = yaml.safe_load(
        (K8S / "overlays" / overlay_of(overlay) / "kustomization.yaml").read_text()
    )
    (image,) = [i for i in kustomization["images"] if i["name"] == "ringleader"]
    expected = f"{image['newName']}:{image['newTag']}"
    if "digest" in image:
        expected += f"@{image['digest']}"
    docs = render(overlay)
    for kind, name in TOKEN_USERS.items():
        assert {c["image"] for c in containers(find(docs, kind, name))} == {expected}


@pytest.mark.parametrize("overlay", ["prod", PROD_WITH_FRONTS])
def test_prod_images_are_pinned_by_digest(overlay: str) -> None:
    """A tag can be moved to other content; a digest names exactly one image."""
    pinned = re.compile(r"@sha256:[0-9a-f]{64}$")
    images = [
        c["image"]
        for w in workloads(render(overlay))
        for c in pod_spec(w)["containers"] + pod_spec(w).get("initContainers", [])
    ]
    assert images
    unpinned = [i for i in images if not pinned.search(i)]
    assert not unpinned, f"prod images without a digest: {unpinned}"


# -- example cache servers and their registration ----------------------------------------


@renders
def test_registration_job_adds_every_cache_pod(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    expected: set[tuple[str, int]] = set()
    for component in ("memcached", "redis"):
        (sts,) = [
            s for s in of_kind(docs, "StatefulSet")
            if s["metadata"]["labels"]["app.kubernetes.io/component"] == component
        ]  # fmt: skip
        (container,) = containers(sts)
        port = port_number(container, component)
        service = service_named(docs, sts["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None", "stable per-pod DNS names"
        name = sts["metadata"]["name"]
        expected |= {
            (f"{name}-{i}.{sts['spec']['serviceName']}", port)
            for i in range(sts["spec"]["replicas"])
        }

    job = find(docs, "Job", "ringleader-register-backends")
    assert job["spec"]["activeDeadlineSeconds"] > 0, "retries are bounded"
    registered = registered_backends(docs, tmp_path)
    assert {(spec.host, spec.port) for specs in registered.values() for spec in specs} == expected
    # The proxies serve exactly the pools the Job fills.
    served = {
        args[args.index("--pool") + 1]
        for args in (c["args"] for c in containers(find(docs, "Deployment", "ringleader-proxy")))
    }
    assert set(registered) == served


# -- monitoring (CRDs: no schema in kubernetes-validate, so checked here) -----------------


@renders
def test_monitoring_objects(overlay: str) -> None:
    docs = render(overlay)
    services = of_kind(docs, "Service")
    monitors = of_kind(docs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"ringleader-proxy", "ringleader-control"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == RELEASE_LABEL[overlay_of(overlay)]
        selected = [
            s for s in services if selects(monitor["spec"]["selector"]["matchLabels"],
                                           s["metadata"]["labels"])
        ]  # fmt: skip
        assert len(selected) == 1, f"{monitor['metadata']['name']} selects {len(selected)}"
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
        if monitor["metadata"]["name"] == "ringleader-control":
            # Scrape nodes that are not Ready too: those are the ones without a leader.
            assert selected[0]["spec"]["publishNotReadyAddresses"] is True

    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == RELEASE_LABEL[overlay_of(overlay)]
    assert rule["spec"] == load_rules(), "PrometheusRule differs from ringleader.rules.yml"


@overlays
def test_grafana_dashboard_configmap(overlay: str) -> None:
    config_map = find(render(overlay), "ConfigMap", "ringleader-grafana-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "dashboards" / "grafana").glob("*.json"))
    assert files
    assert config_map["data"] == {f.name: f.read_text() for f in files}
