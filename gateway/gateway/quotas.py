"""Per-user limits: model calls a minute, and streams open at once.

Both answer 429 with `Retry-After`, before any work is done. They live in the
gateway's memory: with several gateway replicas each one counts on its own
(route a user to one replica, or move the counters to a shared store).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from .auth import Principal, PrincipalDep
from .errors import ApiError


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class TokenBuckets:
    """`per_minute` calls a minute per key, refilled continuously, so a burst of
    up to `per_minute` calls is allowed after a quiet minute."""

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[object, _Bucket] = {}

    def take(self, key: object) -> float:
        """Takes one call; returns 0, or the seconds to wait when the bucket is empty."""
        now = self.clock()
        bucket = self.buckets.setdefault(key, _Bucket(self.capacity, now))
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.refill_per_s)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.refill_per_s

    def forget_idle(self) -> None:
        """Drops full buckets (their users have been quiet for a minute): memory stays bounded."""
        now = self.clock()
        for key in [k for k, b in self.buckets.items()
                    if b.tokens + (now - b.updated) * self.refill_per_s >= self.capacity]:
            del self.buckets[key]


def too_many(message: str, retry_after_s: float) -> ApiError:
    return ApiError(429, message, "rate_limited", headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


class UserQuotas:
    def __init__(self, per_minute: int, max_streams: int) -> None:
        self.calls = TokenBuckets(per_minute)
        self.max_streams = max_streams
        self.open_streams: dict[int, int] = defaultdict(int)
        self._taken = 0

    def charge(self, user_id: int) -> None:
        """Counts one model call of the user, or raises 429."""
        self._taken += 1
        if self._taken % 1000 == 0:
            self.calls.forget_idle()
        wait = self.calls.take(user_id)
        if wait:
            raise too_many(f"too many requests: the limit is {int(self.calls.capacity)} a minute per user; "
                           f"retry in {math.ceil(wait)} s", wait)

    def open_stream(self, user_id: int) -> Callable[[], None]:
        """Takes one of the user's stream slots, or raises 429; returns the
        function that gives it back (calling it more than once is harmless)."""
        if self.open_streams[user_id] >= self.max_streams:
            raise too_many(f"too many streams open: the limit is {self.max_streams} at once per user; "
                           "finish or stop one first", 1)
        self.open_streams[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open_streams[user_id] -= 1
                if self.open_streams[user_id] <= 0:
                    del self.open_streams[user_id]

        return release


async def get_quotas(request: Request) -> UserQuotas:
    return request.app.state.quotas


QuotasDep = Annotated[UserQuotas, Depends(get_quotas)]


async def charged_principal(principal: PrincipalDep, quotas: QuotasDep) -> Principal:
    """The caller, after one model call has been counted against their limit."""
    quotas.charge(principal.user_id)
    return principal


ChargedPrincipalDep = Annotated[Principal, Depends(charged_principal)]
