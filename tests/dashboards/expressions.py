"""Every PromQL expression in dashboards/: Grafana panel targets and alert rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.dashboards.rules import ROOT, load_rules

GRAFANA_DIR = ROOT / "dashboards" / "grafana"
DASHBOARDS_DIR = ROOT / "dashboards"
METRIC_NAME = re.compile(r"\bringleader_[a-z0-9_]+\b")

# Grafana fills these in before querying. For tests against a Prometheus scraping every
# second, 15s holds enough samples for rate() (Grafana's own floor is 4 scrape intervals).
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$namespace": ".*",
}


@dataclass(frozen=True)
class Expression:
    where: str
    """`file: panel title [refId]` or `file: alert name`, for failure messages."""
    promql: str

    def runnable(self) -> str:
        text = self.promql
        for variable, value in GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        assert "$" not in text, f"{self.where}: a Grafana variable the tests do not know"
        return text


def dashboards() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text()) for path in sorted(GRAFANA_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def dashboard_expressions() -> list[Expression]:
    found: list[Expression] = []
    for path, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                where = f"{path.name}: {panel['title']} [{target['refId']}]"
                found.append(Expression(where, target["expr"]))
    return found


def rule_expressions() -> list[Expression]:
    return [
        Expression(f"ringleader.rules.yml: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in load_rules()["groups"]
        for rule in group["rules"]
    ]


def all_expressions() -> list[Expression]:
    return dashboard_expressions() + rule_expressions()


def metric_names_used() -> set[str]:
    """Every ringleader_* name in any file under dashboards/ (JSON, rules, their tests and
    the PrometheusRule), so no file can refer to a metric that does not exist."""
    names: set[str] = set()
    for path in DASHBOARDS_DIR.rglob("*"):
        if path.suffix in (".json", ".yml", ".yaml") and path.is_file():
            names |= set(METRIC_NAME.findall(path.read_text()))
    return names
