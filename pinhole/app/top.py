"""``pinhole top``: live throughput in the terminal, read from ``/metrics``.

For a quick look without Prometheus: it scrapes the given endpoints every few
seconds and shows rates computed from the difference of two scrapes, summed
over the endpoints. A counter that went down (the process restarted) counts
from zero again, as Prometheus's ``rate`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_URLS = ("http://127.0.0.1:8080",)
HELP = (
    "Show live throughput (uploads/s, jobs/s, requests/s, bytes/s, cache hit ratio) "
    "read from the /metrics of running Pinhole processes."
)

Labels = frozenset[tuple[str, str]]
# Sample name -> label set -> value, for the samples this tool reads.
Samples = dict[str, dict[Labels, float]]

_WANTED = (
    "pinhole_uploads_total",
    "pinhole_upload_bytes_total",
    "pinhole_jobs_published_total",
    "pinhole_jobs_processed_total",
    "pinhole_jobs_dead_lettered_total",
    "pinhole_http_requests_total",
    "pinhole_cache_requests_total",
    "pinhole_bytes_served_total",
    "pinhole_jobs_in_flight",
    "pinhole_consumer_lag",
)


def metrics_url(url: str) -> str:
    """``http://host:8080`` → ``http://host:8080/metrics``; a given path is kept."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def parse_samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _WANTED:
                labels: Labels = frozenset(sample.labels.items())
                series = out.setdefault(sample.name, {})
                series[labels] = series.get(labels, 0.0) + sample.value
    return out


def _matches(labels: Labels, where: Mapping[str, str | Callable[[str], bool]]) -> bool:
    have = dict(labels)
    for name, wanted in where.items():
        value = have.get(name)
        if value is None:
            return False
        if callable(wanted) and not wanted(value):
            return False
        if isinstance(wanted, str) and value != wanted:
            return False
    return True


def total(
    samples: Samples, name: str, where: Mapping[str, str | Callable[[str], bool]] | None = None
) -> float:
    """Sum of ``name`` over the series whose labels match ``where``."""
    return sum(
        value for labels, value in samples.get(name, {}).items() if _matches(labels, where or {})
    )


def counter_increase(before: Samples, after: Samples) -> Samples:
    """Per series, how much each counter grew; a counter that went down was reset."""
    out: Samples = {}
    for name, series in after.items():
        previous = before.get(name, {})
        grown: dict[Labels, float] = {}
        for labels, value in series.items():
            old = previous.get(labels, 0.0)
            grown[labels] = value - old if value >= old else value
        out[name] = grown
    return out


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


@dataclass(frozen=True)
class Rates:
    seconds: float
    uploads: float = 0.0
    upload_bytes: float = 0.0
    jobs_published: float = 0.0
    jobs_ready: float = 0.0
    jobs_failed: float = 0.0
    dead_letters: float = 0.0
    requests: float = 0.0
    errors_5xx: float = 0.0
    bytes_served: float = 0.0
    # Fraction of edge lookups answered by a cache (L1 or Redis); NaN without lookups.
    cache_hit_ratio: float = math.nan
    tier_hit_ratio: dict[str, float] = field(default_factory=dict)
    jobs_in_flight: float = 0.0
    consumer_lag: float = 0.0


def rates(before: Mapping[str, Samples], after: Mapping[str, Samples], seconds: float) -> Rates:
    """Per-second rates between two rounds of scrapes taken ``seconds`` apart.

    Both map endpoint → samples. Increases are taken per endpoint (so one
    restarted process reads as a reset, not as the others' traffic going
    down), then summed; gauges are summed from the latest round.
    """
    if seconds <= 0:
        raise ValueError("scrapes must be apart in time")
    grown = merge([counter_increase(before[u], after[u]) for u in after if u in before])
    current = merge(list(after.values()))

    def per_second(name: str, **where: str | Callable[[str], bool]) -> float:
        return total(grown, name, where) / seconds

    def tier_total(tier: str, result: str | None = None) -> float:
        where: dict[str, str | Callable[[str], bool]] = {"tier": tier}
        if result is not None:
            where["result"] = result
        return total(grown, "pinhole_cache_requests_total", where)

    tiers = ("l1", "redis", "storage")
    lookups = tier_total("l1")
    cached = tier_total("l1", "hit") + tier_total("redis", "hit")
    return Rates(
        seconds=seconds,
        uploads=per_second("pinhole_uploads_total"),
        upload_bytes=per_second("pinhole_upload_bytes_total"),
        jobs_published=per_second("pinhole_jobs_published_total", result="ok"),
        jobs_ready=per_second("pinhole_jobs_processed_total", result="ready"),
        jobs_failed=per_second("pinhole_jobs_processed_total", result="failed"),
        dead_letters=per_second("pinhole_jobs_dead_lettered_total"),
        requests=per_second("pinhole_http_requests_total"),
        errors_5xx=per_second("pinhole_http_requests_total", status=lambda s: s.startswith("5")),
        bytes_served=per_second("pinhole_bytes_served_total"),
        cache_hit_ratio=_ratio(cached, lookups),
        tier_hit_ratio={t: _ratio(tier_total(t, "hit"), tier_total(t)) for t in tiers},
        jobs_in_flight=total(current, "pinhole_jobs_in_flight"),
        consumer_lag=total(current, "pinhole_consumer_lag"),
    )


def merge(samples: Sequence[Samples]) -> Samples:
    """Several endpoints' samples as one (series of the same labels add up)."""
    out: Samples = {}
    for one in samples:
        for name, series in one.items():
            merged = out.setdefault(name, {})
            for labels, value in series.items():
                merged[labels] = merged.get(labels, 0.0) + value
    return out


def _human_bytes(per_second: float) -> str:
    value = per_second
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}/s"
        value /= 1024
    raise AssertionError("unreachable")


def _percent(ratio: float) -> str:
    return "   -" if math.isnan(ratio) else f"{ratio * 100:5.1f}%"


def render(r: Rates, endpoints: Mapping[str, str]) -> str:
    tiers = "  ".join(f"{tier} {_percent(ratio)}" for tier, ratio in r.tier_hit_ratio.items())
    lines = [
        f"pinhole top — rates over the last {r.seconds:.1f}s",
        "",
        f"  uploads/s      {r.uploads:9.2f}   ({_human_bytes(r.upload_bytes)} in)",
        f"  jobs/s         {r.jobs_published:9.2f} published  {r.jobs_ready:.2f} ready  "
        f"{r.jobs_failed:.2f} failed  {r.dead_letters:.2f} dead-lettered",
        f"  in flight      {r.jobs_in_flight:9.0f}   consumer lag {r.consumer_lag:.0f}",
        f"  requests/s     {r.requests:9.2f}   ({r.errors_5xx:.2f} 5xx/s)",
        f"  served         {_human_bytes(r.bytes_served):>12}",
        f"  cache hits     {_percent(r.cache_hit_ratio):>9}   by tier: {tiers}",
        "",
    ]
    lines += [f"  {url}  {state}" for url, state in endpoints.items()]
    return "\n".join(lines)


def fetch(url: str, timeout: float = 2.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text: str = resp.read().decode("utf-8", "replace")
    return parse_samples(text)


def scrape(urls: Sequence[str]) -> tuple[dict[str, Samples], dict[str, str]]:
    got: dict[str, Samples] = {}
    state: dict[str, str] = {}
    for url in urls:
        try:
            got[url] = fetch(url)
            state[url] = "ok"
        except (OSError, urllib.error.URLError, ValueError) as exc:
            state[url] = f"down ({exc})"
    return got, state


def run(urls: Sequence[str], interval: float, count: int = 0) -> None:
    """Print a fresh table every ``interval`` seconds; ``count`` > 0 stops after that many."""
    endpoints = [metrics_url(u) for u in urls]
    clear = sys.stdout.isatty()
    before, _ = scrape(endpoints)
    taken = time.monotonic()
    shown = 0
    while count <= 0 or shown < count:
        time.sleep(interval)
        after, state = scrape(endpoints)
        now = time.monotonic()
        # An endpoint missing from either round adds nothing to this interval's rates.
        table = render(rates(before, after, now - taken), state)
        print(("\x1b[H\x1b[2J" if clear else "") + table, flush=True)
        before, taken, shown = after, now, shown + 1


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        default=list(DEFAULT_URLS),
        help="base URL or /metrics URL of a Pinhole process (default: http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between scrapes (default: 2)"
    )
    parser.add_argument(
        "--count", type=int, default=0, help="stop after this many updates (default: run on)"
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> None:
    if args.interval <= 0:
        sys.exit("pinhole top: --interval must be positive")
    with contextlib.suppress(KeyboardInterrupt):
        run(args.urls, args.interval, args.count)
