"""Rate limits per client: what ingest and the edge ask before the work a limit guards.

Each limit is a policy: an action (``uploads``, ``upload-urls``, ``renders``),
the subject it counts (a bearer token, an owner, a client address) and a quota
per window, from ``Settings.rate_limits`` (0: off). A request is counted once
against every policy of its action whose subject it has, all at once, in the
shared ``RateLimiter`` (Redis: every process counts together). Over any quota
it is refused with ``429 rate-limit-exceeded``, ``Retry-After`` and the fields
of the IETF draft "RateLimit header fields for HTTP"
(draft-ietf-httpapi-ratelimit-headers)::

    RateLimit-Policy: "uploads-per-token";q=6000;w=60, "uploads-per-owner";q=600;w=60
    RateLimit: "uploads-per-token";r=0;t=12, "uploads-per-owner";r=571;t=41

When the counters' store does not answer (Redis down, slow, or its node of a
cluster gone), the request goes through: **fail open**. A limiter exists to
stop abuse, and turning a cache outage into refusals (or 5xx) for every client
would be the bigger harm. It costs a request at most the cache's short
deadline; then for ``cooldown_seconds`` no request waits on the store at all,
and one request at a time probes it again. Each such request is counted
(``pinhole_rate_limit_requests_total{outcome="failed-open"}``, alerted on) and
the outage is logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from metrics.definitions import RATE_LIMIT_REQUESTS
from pinhole.clients import ClientAddresses, address_subject
from pinhole.errors import CacheUnavailable, RateLimitExceeded
from pinhole.logs import ThrottledLog
from pinhole.ports import RateLimiter, WindowCount
from pinhole.settings import RateLimits

Action = Literal["uploads", "upload-urls", "renders", "record-writes"]
Subject = Literal["token", "owner", "address"]

UPLOADS: Action = "uploads"
UPLOAD_URLS: Action = "upload-urls"
RENDERS: Action = "renders"
RECORD_WRITES: Action = "record-writes"

ALLOWED, LIMITED, FAILED_OPEN = "allowed", "limited", "failed-open"

log = logging.getLogger("pinhole.rate_limits")
_DOWN = "rate-limiter-down"


@dataclass(frozen=True, slots=True)
class Policy:
    action: Action
    subject: Subject
    quota: int
    window_seconds: int

    @property
    def name(self) -> str:
        return f"{self.action}-per-{self.subject}"

    def field(self) -> str:
        """This policy as an item of ``RateLimit-Policy``."""
        return f'"{self.name}";q={self.quota};w={self.window_seconds}'


def policies(cfg: RateLimits) -> list[Policy]:
    """Every limit the settings turn on."""
    quotas: list[tuple[Action, Subject, int]] = [
        (UPLOADS, "token", cfg.uploads_per_token),
        (UPLOADS, "owner", cfg.uploads_per_owner),
        (UPLOADS, "address", cfg.uploads_per_address),
        (UPLOAD_URLS, "token", cfg.upload_urls_per_token),
        (UPLOAD_URLS, "owner", cfg.upload_urls_per_owner),
        (RENDERS, "address", cfg.renders_per_address),
        (RECORD_WRITES, "token", cfg.record_writes_per_token),
        (RECORD_WRITES, "owner", cfg.record_writes_per_owner),
    ]
    return [Policy(a, s, q, cfg.window_seconds) for a, s, q in quotas if q > 0]


@dataclass(frozen=True, slots=True)
class Counted:
    policy: Policy
    count: WindowCount

    @property
    def remaining(self) -> int:
        return max(0, self.policy.quota - self.count.count)

    @property
    def reset(self) -> int:
        return max(0, math.ceil(self.count.reset_seconds))

    @property
    def over(self) -> bool:
        return self.count.count > self.policy.quota

    def field(self) -> str:
        """This count as an item of ``RateLimit``."""
        return f'"{self.policy.name}";r={self.remaining};t={self.reset}'


def headers_for(counted: list[Counted]) -> dict[str, str]:
    if not counted:
        return {}
    return {
        "RateLimit-Policy": ", ".join(c.policy.field() for c in counted),
        "RateLimit": ", ".join(c.field() for c in counted),
    }


class RateLimitGate:
    """The limits of ``cfg`` over ``limiter``; see the module docstring."""

    def __init__(
        self,
        limiter: RateLimiter,
        cfg: RateLimits,
        *,
        addresses: ClientAddresses | None = None,
        cooldown_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.policies = policies(cfg)
        # Who a request's client is (``trusted_proxies``); the peer alone by default.
        self.addresses = addresses or ClientAddresses()
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._down_until: float | None = None
        self._log = ThrottledLog(log)
        for policy in self.policies:  # every series exists from the start, at 0
            for outcome in (ALLOWED, LIMITED, FAILED_OPEN):
                RATE_LIMIT_REQUESTS.labels(policy.name, outcome)

    def enforces(self, action: Action) -> bool:
        return any(p.action == action for p in self.policies)

    async def check(
        self,
        action: Action,
        *,
        token: str | None = None,
        owner: str | None = None,
        address: str | None = None,
    ) -> dict[str, str]:
        """Count one request of ``action`` against each of its policies whose
        subject is given. ``RateLimitExceeded`` if it is over any quota;
        otherwise the ``RateLimit`` headers an answer may carry (none for the
        policies whose store failed open)."""
        subjects: dict[Subject, str | None] = {
            "token": token,
            "owner": owner,
            "address": address_subject(address) if address is not None else None,
        }
        wanted = [
            (p, subject)
            for p in self.policies
            if p.action == action and (subject := subjects[p.subject]) is not None
        ]
        if not wanted:
            return {}
        if not self._may_ask():
            for policy, _ in wanted:
                RATE_LIMIT_REQUESTS.labels(policy.name, FAILED_OPEN).inc()
            return {}
        answers = await asyncio.gather(
            *(self.limiter.hit(f"{p.name}:{s}", p.window_seconds) for p, s in wanted),
            return_exceptions=True,
        )
        counted: list[Counted] = []
        failure: CacheUnavailable | None = None
        for (policy, _), answer in zip(wanted, answers, strict=True):
            if isinstance(answer, CacheUnavailable):
                failure = answer
                RATE_LIMIT_REQUESTS.labels(policy.name, FAILED_OPEN).inc()
            elif isinstance(answer, BaseException):
                raise answer  # a bug, not an outage: the port promises CacheUnavailable
            else:
                counted.append(Counted(policy, answer))
        self._note(failure)
        over = [c for c in counted if c.over]
        for c in counted:
            RATE_LIMIT_REQUESTS.labels(c.policy.name, LIMITED if c in over else ALLOWED).inc()
        headers = headers_for(counted)
        if over:
            names = ", ".join(c.policy.name for c in over)
            retry = max(c.reset for c in over)
            raise RateLimitExceeded(
                f"Rate limit exceeded ({names}); retry in {max(1, retry)} seconds.",
                retry_after=retry,
                headers=headers,
            )
        return headers

    def _may_ask(self) -> bool:
        """False while the store is cooling down after a failure; the first
        caller after the cooldown probes it, and the others keep failing open."""
        if self._down_until is None:
            return True
        now = self._clock()
        if now < self._down_until:
            return False
        self._down_until = now + self._cooldown
        return True

    def _note(self, failure: CacheUnavailable | None) -> None:
        if failure is not None:
            self._down_until = self._clock() + self._cooldown
            self._log.warning(
                _DOWN,
                "rate limiter unavailable: letting requests through uncounted",
                error=str(failure),
            )
        elif self._down_until is not None:
            self._down_until = None
            self._log.recovered(_DOWN, "rate limiter available again: counting requests")

    async def close(self) -> None:
        await self.limiter.close()


RATE_LIMITS_KEY = web.AppKey("rate_limits", RateLimitGate)


def gate_of(request: web.Request) -> RateLimitGate | None:
    """The app's limits; ``None`` where the app was built without them."""
    return request.app.get(RATE_LIMITS_KEY)
