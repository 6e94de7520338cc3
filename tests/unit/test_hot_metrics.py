"""metrics.hot: batched counts reach prometheus-client exactly as direct calls would."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from metrics import hot

BUCKETS = (0.001, 0.01, 0.1, 1)
# Zero, exactly on a bound (le is inclusive), between bounds, past the last finite bound.
AMOUNTS = (0.0, 0.001, 0.0011, 0.01, 0.05, 0.3, 1.0, 7.5, 0.0004)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=registry)


def test_a_flushed_histogram_equals_plain_observe() -> None:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = histogram(direct_registry).labels("/x")
    batched = hot.HotHistogram(histogram(batched_registry).labels("/x"))
    for amount in AMOUNTS:
        direct.observe(amount)
        batched.observe(amount)
    before = samples(batched_registry)
    assert before[("t_seconds_count", (("route", "/x"),))] == 0
    batched.flush()
    assert samples(batched_registry) == samples(direct_registry)
    # A second flush with nothing pending changes nothing.
    batched.flush()
    assert samples(batched_registry) == samples(direct_registry)
    assert samples(direct_registry)[("t_seconds_bucket", (("le", "0.001"), ("route", "/x")))] == 3


def test_a_counter_adds_up_once() -> None:
    registry = CollectorRegistry()
    child = Counter("t_bytes", "t", ["tier"], registry=registry).labels("l1")
    counter = hot.HotCounter(child)
    counter.inc(100)
    counter.inc()
    assert child._value.get() == 0
    hot.flush()
    hot.flush()
    assert child._value.get() == 101


async def test_the_app_flushes_periodically_and_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hot, "FLUSH_SECONDS", 0.02)
    child = Counter("t_periodic", "t", registry=CollectorRegistry())
    counter = hot.HotCounter(child)
    app = web.Application()
    ctx = hot.flush_periodically(app)
    await anext(ctx)
    counter.inc(2)
    for _ in range(100):
        if child._value.get() == 2:
            break
        await asyncio.sleep(0.01)
    assert child._value.get() == 2
    counter.inc(3)
    with pytest.raises(StopAsyncIteration):
        await anext(ctx)
    assert child._value.get() == 5
