"""Both rendered overlays, scanned as a user's security team would: checkov's Kubernetes
checks, failing on any finding that the allow-list below does not explain.

checkov pins many libraries of its own, so it lives in its own venv, not the project's:
    python3 -m venv .venv-checkov && .venv-checkov/bin/pip install 'checkov>=3.2,<4'
$RINGLEADER_CHECKOV names another checkov executable. Without one the tests fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import RENDERS, ROOT, Doc, overlay_of, render

CHECKOV_ENV = "RINGLEADER_CHECKOV"
INSTALL = "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install 'checkov>=3.2,<4'"

# check ID -> the overlays where its findings are accepted. Keep it short; each entry says
# why. An entry that no longer matches a finding fails the test, so the list cannot rot.
ALLOWED: dict[str, frozenset[str]] = {
    # "Image should use digest": dev runs a locally built ringleader:dev and follows the
    # upstream cache images' tags on purpose. The prod render is pinned
    # (test_prod_images_are_pinned_by_digest), and prod passes this check.
    "CKV_K8S_43": frozenset({"dev"}),
    # "Image Pull Policy should be Always": checkov accepts a digest instead, so prod
    # passes. Dev's mutable tags keep IfNotPresent so that images loaded into a laptop
    # cluster (kind load, a local registry) run without a registry round trip.
    "CKV_K8S_15": frozenset({"dev"}),
}


def checkov() -> str:
    path = os.environ.get(CHECKOV_ENV) or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    if not os.access(path, os.X_OK):
        pytest.fail(f"checkov not found at {path}: from the repository root run {INSTALL}")
    return path


Finding = tuple[str, str]
"""(check ID, resource)"""


def scan(docs: tuple[Doc, ...], workdir: Path) -> list[Finding]:
    """The failed checks of checkov's Kubernetes framework on `docs`."""
    manifest = workdir / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    proc = subprocess.run(
        # --skip-download: no Prisma Cloud look-ups; the checks all ship in the package.
        [checkov(), "-f", manifest.name, "--framework", "kubernetes",
         "-o", "json", "--quiet", "--skip-download"],
        capture_output=True, text=True, timeout=300, cwd=workdir, check=False,
    )  # fmt: skip
    # 0: no failed check; 1: some failed. Anything else is checkov itself failing.
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}:\n{proc.stderr}"
    report: Any = json.loads(proc.stdout)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, proc.stdout
    assert summary["resource_count"] > 0, "checkov scanned nothing"
    assert summary["passed"] > 0, "checkov ran no check"
    return [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]


@pytest.mark.parametrize("name", RENDERS)
def test_checkov_finds_only_allowed(name: str, tmp_path: Path) -> None:
    """Every render, the prod overlay with the native fronts included, under the allow-list
    of the overlay it starts from."""
    overlay = overlay_of(name)
    findings = scan(render(name), tmp_path)
    unexplained = [f for f in findings if overlay not in ALLOWED.get(f[0], frozenset())]
    assert not unexplained, f"{name}: checkov findings not allowed:\n" + "\n".join(
        f"  {check} {resource}" for check, resource in unexplained
    )
    stale = {c for c, where in ALLOWED.items() if overlay in where} - {c for c, _ in findings}
    assert not stale, f"allow-list entries for {overlay} that match nothing: {sorted(stale)}"


def test_scan_reports_a_real_finding(tmp_path: Path) -> None:
    """Guards the test above: without its NetworkPolicies, prod fails CKV2_K8S_6 for pods."""
    docs = tuple(d for d in render("prod") if d["kind"] != "NetworkPolicy")
    checks = {check for check, _ in scan(docs, tmp_path)}
    assert "CKV2_K8S_6" in checks
