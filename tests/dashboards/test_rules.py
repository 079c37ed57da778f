"""dashboards/prometheus: promtool accepts the rules and their unit tests pass; every alert
carries severity, summary, description and a runbook section; every alert's unit tests
show it firing and clearing; the PrometheusRule is the rule file, unchanged."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.dashboards.rules import (
    PROMETHEUS_RULE_FILE,
    ROOT,
    RULES_FILE,
    RULES_TEST_FILE,
    alerting_rules,
    load_rules,
    prometheus_rule,
    render,
)

RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: scripts/test.sh installs the Debian package "
            "`prometheus`, which ships it"
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        cwd=RULES_FILE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }


def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", RULES_FILE.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests() -> None:
    proc = run_promtool("test", "rules", RULES_TEST_FILE.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alerting_rules()}
    required = {
        "RingleaderNoLeader",  # no leader
        "RingleaderFrequentLeaderChanges",
        "RingleaderProxyEpochDisagreement",  # proxies disagree on the epoch > 1 minute
        "RingleaderBackendDown",
        "RingleaderHighErrorRate",
        "RingleaderLowHitRatio",
        "RingleaderControlPlaneUnreachable",  # from the proxies
    }
    assert required <= names
    disagreement = next(
        r for r in alerting_rules() if r["alert"] == "RingleaderProxyEpochDisagreement"
    )
    assert disagreement["for"] == "1m"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: str(r["alert"]))
def test_alert_is_documented(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    path, _, fragment = annotations["runbook_url"].partition("#")
    assert (ROOT / path).resolve() == RUNBOOK.resolve()
    assert fragment == github_anchor(rule["alert"])
    assert fragment in runbook_anchors(), f"docs/runbook.md has no section {rule['alert']}"


def test_every_alert_fires_and_clears_in_unit_tests() -> None:
    """Each alert has an eval_time where it fires and a later one where it is gone."""
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())["tests"]
    seen: dict[str, list[tuple[int, bool]]] = {}
    for group in tests:
        for case in group.get("alert_rule_test", []):
            firing = bool(case.get("exp_alerts"))
            seen.setdefault(case["alertname"], []).append((duration_s(case["eval_time"]), firing))
    for rule in alerting_rules():
        checks = seen.get(rule["alert"], [])
        fired = [t for t, firing in checks if firing]
        assert fired, f"{rule['alert']}: no unit test shows it firing"
        assert any(not firing and t > min(fired) for t, firing in checks), (
            f"{rule['alert']}: no unit test shows it clearing after it fired"
        )


def duration_s(text: str) -> int:
    total = 0
    for number, unit in re.findall(r"(\d+)([smh])", text):
        total += int(number) * {"s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_prometheus_rule_is_the_rule_file() -> None:
    committed = yaml.safe_load(PROMETHEUS_RULE_FILE.read_text())
    assert committed == prometheus_rule()
    assert committed["spec"] == load_rules()
    # Also byte for byte, so the committed file is exactly what the generator writes.
    assert PROMETHEUS_RULE_FILE.read_text() == render(), (
        "prometheusrule.yaml is stale: run `.venv/bin/python -m tests.dashboards.rules --write`"
    )
