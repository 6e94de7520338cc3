"""The shipped Prometheus config and alert rules, checked by Prometheus's own promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.support.services import require_binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "metrics" / "prometheus"


def promtool(*args: str) -> str:
    result = subprocess.run(
        [require_binary("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def load(name: str) -> Any:
    return yaml.safe_load((PROMETHEUS_DIR / name).read_text())


def test_config_is_valid_and_scrapes_every_role() -> None:
    promtool("check", "config", "prometheus.yml")
    config = load("prometheus.yml")
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "ingest": ["ingest:8081"],
        "transcoder": ["transcoder:8082"],
        "server": ["server:8080"],
        "cdn-purge": ["cdn-purge:8083"],
        "webhooks": ["webhooks:8084"],
    }
    assert config["rule_files"] == ["alerts.yml"]


def test_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_rules_unit_tests_pass_and_cover_every_alert() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")
    alerts = {rule["alert"] for group in load("alerts.yml")["groups"] for rule in group["rules"]}
    assert alerts >= {
        "PinholeConsumerLagGrowing",
        "PinholeDeadLetters",
        "PinholeHigh5xxRatio",
        "PinholeSlowReady",
        "PinholeCacheHitRatioCollapse",
    }
    tested = load("alerts.test.yml")["tests"]
    firing = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    # Each alert is shown to fire, and shown to stay quiet when it should.
    assert firing == alerts
    assert quiet == alerts
