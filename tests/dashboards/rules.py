"""The PrometheusRule in dashboards/prometheus/prometheusrule.yaml is generated from the
alert rule file, so Prometheus Operator installs and plain Prometheus load the same rules.

kustomize cannot embed a file's YAML under `spec`, so the generated object is committed
and test_rules.py asserts it matches. Regenerate after editing the rules:

    .venv/bin/python -m tests.dashboards.rules --write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "ringleader.rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "ringleader.rules.test.yml"
PROMETHEUS_RULE_FILE = PROMETHEUS_DIR / "prometheusrule.yaml"

HEADER = (
    "# Generated from ringleader.rules.yml by `.venv/bin/python -m tests.dashboards.rules "
    "--write`;\n# do not edit by hand (tests/dashboards/test_rules.py checks they match).\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL) as `|` blocks, so the generated file stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def load_rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text())
    return rules


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "ringleader",
            "labels": {
                "app.kubernetes.io/name": "ringleader",
                "app.kubernetes.io/component": "monitoring",
                # What kube-prometheus-stack selects rules by; overlays may change it.
                "release": "prometheus",
            },
        },
        "spec": load_rules(),
    }


def render() -> str:
    body: str = yaml.dump(prometheus_rule(), Dumper=_BlockDumper, sort_keys=False, width=100)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite prometheusrule.yaml")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        PROMETHEUS_RULE_FILE.write_text(text)
        print(f"wrote {PROMETHEUS_RULE_FILE.relative_to(ROOT)}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
