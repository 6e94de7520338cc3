"""A real Prometheus server for tests: scrapes given targets every second."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.support.services import LoggedProcess, free_port, require_binary, wait_for_port

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "metrics" / "prometheus"


class Prometheus(LoggedProcess):
    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_scraped_after(self, moment: float, timeout: float = 30.0) -> None:
        """Until every target has been scraped (successfully) after ``moment``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # timestamp() of a bare selector is the scrape time; of any other
            # expression it would be the evaluation time.
            scraped = [float(s["value"][1]) for s in self.query("timestamp(up)")]
            healthy = [float(s["value"][1]) == 1 for s in self.query("up")]
            # A target never scraped yet has no ``up`` at all.
            targets = len(self.api("targets")["activeTargets"])
            ready = targets > 0 and len(scraped) == len(healthy) == targets and all(healthy)
            if ready and min(scraped) > moment:
                return
            time.sleep(0.2)
        targets = self.api("targets")["activeTargets"]
        raise TimeoutError(f"targets not scraped after {moment}: {targets}\n{self.log_tail()}")


def scrape_config(
    targets: dict[str, str], scrape_seconds: int = 1, rules: Path | None = None
) -> dict[str, Any]:
    """The shipped prometheus.yml with these ``job -> host:port`` targets, scraping fast."""
    config: dict[str, Any] = yaml.safe_load((SHIPPED_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = f"{scrape_seconds}s"
    config["global"]["evaluation_interval"] = f"{scrape_seconds}s"
    config["global"]["scrape_timeout"] = f"{scrape_seconds}s"
    config["rule_files"] = [str(rules or SHIPPED_DIR / "alerts.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), f"shipped jobs {sorted(jobs)} vs {sorted(targets)}"
    for name, target in targets.items():
        jobs[name]["static_configs"] = [{"targets": [target]}]
    return config


def start_prometheus(config: dict[str, Any], workdir: Path) -> Prometheus:
    binary = require_binary("prometheus")
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(port, proc, log_path)
    try:
        wait_for_port(port, proc=proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
    return server


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)
