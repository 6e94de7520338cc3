"""The rate-limit gate (pinhole/rate_limits.py) over the in-process counters:
quotas per subject, the IETF draft's headers, windows that end, limits that are
off, and failing open when the counters' store fails."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from pinhole.cache.rate_limit import MemoryRateLimiter
from pinhole.errors import CacheUnavailable, RateLimitExceeded
from pinhole.ports import RateLimiter, WindowCount
from pinhole.rate_limits import RENDERS, UPLOADS, RateLimitGate
from pinhole.settings import RateLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _count(limit: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "pinhole_rate_limit_requests_total", {"limit": limit, "outcome": outcome}
    )
    return value or 0.0


def _gate(clock: Clock, **quotas: int) -> RateLimitGate:
    cfg = RateLimits(
        **{
            "window_seconds": 60,
            "uploads_per_token": 0,
            "uploads_per_owner": 0,
            "uploads_per_address": 0,
            "upload_urls_per_token": 0,
            "upload_urls_per_owner": 0,
            "renders_per_address": 0,
            **quotas,
        }
    )
    return RateLimitGate(MemoryRateLimiter(clock=clock), cfg, clock=clock)


async def test_a_quota_holds_then_refuses_with_retry_after_and_the_draft_headers() -> None:
    clock = Clock()
    gate = _gate(clock, uploads_per_token=3)
    before = _count("uploads-per-token", "limited")
    for remaining in (2, 1, 0):
        headers = await gate.check(UPLOADS, token="t1")
        assert headers == {
            "RateLimit-Policy": '"uploads-per-token";q=3;w=60',
            "RateLimit": f'"uploads-per-token";r={remaining};t=60',
        }
    clock.now += 48
    with pytest.raises(RateLimitExceeded) as refused:
        await gate.check(UPLOADS, token="t1")
    error = refused.value
    assert (error.status, error.code, error.retry_after) == (429, "rate-limit-exceeded", 12)
    assert error.headers == {
        "RateLimit-Policy": '"uploads-per-token";q=3;w=60',
        "RateLimit": '"uploads-per-token";r=0;t=12',
    }
    assert _count("uploads-per-token", "limited") == before + 1
    # Another token has its own quota; the window's end gives the first one back.
    await gate.check(UPLOADS, token="t2")
    clock.now += 12
    assert (await gate.check(UPLOADS, token="t1"))["RateLimit"] == '"uploads-per-token";r=2;t=60'


async def test_every_subject_is_counted_and_the_most_distant_reset_is_retry_after() -> None:
    clock = Clock()
    gate = _gate(clock, uploads_per_token=10, uploads_per_owner=1)
    await gate.check(UPLOADS, token="t", owner="alice")
    with pytest.raises(RateLimitExceeded) as refused:
        await gate.check(UPLOADS, token="t", owner="alice")
    assert refused.value.headers["RateLimit"] == (
        '"uploads-per-token";r=8;t=60, "uploads-per-owner";r=0;t=60'
    )
    # Bob is another owner; a subject not given is not counted.
    await gate.check(UPLOADS, token="t", owner="bob")
    assert await gate.check(UPLOADS) == {}


async def test_a_limit_set_to_zero_is_off_and_actions_do_not_share_counts() -> None:
    clock = Clock()
    gate = _gate(clock, renders_per_address=1)
    for _ in range(5):
        assert await gate.check(UPLOADS, token="t", address="192.0.2.1") == {}
    await gate.check(RENDERS, address="192.0.2.1")
    with pytest.raises(RateLimitExceeded):
        await gate.check(RENDERS, address="192.0.2.1")
    # IPv6 counts by /64: another address of the same network is the same client.
    await gate.check(RENDERS, address="2001:db8:0:1::1")
    with pytest.raises(RateLimitExceeded):
        await gate.check(RENDERS, address="2001:db8:0:1::2")


async def test_the_memory_counters_forget_ended_windows_and_stay_bounded() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(max_keys=3, clock=clock)
    for key in ("a", "b", "c", "d"):
        await limiter.hit(key, 60)
    assert len(limiter) == 3  # "a", the oldest, was forgotten
    assert (await limiter.hit("a", 60)).count == 1
    clock.now += 61
    assert await limiter.hit("e", 60) == WindowCount(1, 60)
    assert len(limiter) == 1


class BrokenLimiter:
    """A store that is down: every call fails as the port says it may."""

    def __init__(self) -> None:
        self.calls = 0

    async def hit(self, key: str, window_seconds: float) -> WindowCount:
        self.calls += 1
        raise CacheUnavailable("redis EVALSHA failed: TimeoutError")

    async def ping(self) -> None:
        raise CacheUnavailable("down")

    async def close(self) -> None:
        return None


async def test_a_store_that_fails_lets_requests_through_counted_and_asks_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    broken = BrokenLimiter()
    assert isinstance(broken, RateLimiter)
    gate = RateLimitGate(broken, RateLimits(uploads_per_token=1), clock=clock)
    before = _count("uploads-per-token", "failed-open")
    for _ in range(5):
        assert await gate.check(UPLOADS, token="t") == {}
    # One call reached the store; the others failed open at once (cooldown).
    assert broken.calls == 1
    assert _count("uploads-per-token", "failed-open") == before + 5
    clock.now += 1.5
    assert await gate.check(UPLOADS, token="t") == {}
    assert broken.calls == 2
    warnings = [r for r in caplog.records if "rate limiter unavailable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per request
