"""The shipped Grafana dashboard, read the way Grafana reads it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "metrics" / "grafana"
DASHBOARD = GRAFANA_DIR / "pinhole.json"

# What Grafana puts in place of its built-in interval variables. The test's
# Prometheus scrapes every second; two minutes span all the traffic the test
# drives even on a slow machine, and hold well over the four samples Grafana's
# own $__rate_interval guarantees.
BUILTINS = {"__rate_interval": "2m", "__interval": "15s", "__range": "2m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class Query:
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.panel!r} {self.ref_id}: {self.expr}"


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def all_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each template variable's value when "All" is selected (its ``allValue``)."""
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            values[variable["name"]] = variable["allValue"]
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr}")
        return values[name]

    return _VARIABLE.sub(replace, expr)
