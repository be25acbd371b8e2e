"""Token-bucket rate limits, kept per worker process.

Each worker enforces its own buckets: with N workers or replicas a key can
make up to N times the configured rate. That keeps the hot path free of
database writes; put a shared limiter in front (the load balancer) when the
limit must be exact across replicas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

_MAX_BUCKETS = 100_000


class RateLimiter:
    """`per_minute` requests per minute for each name, with bursts up to that many."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, name: str, now: float) -> float:
        tokens, at = self._buckets.get(name, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def retry_after(self, name: str) -> int | None:
        """Seconds to wait when `name` has no request left, else None (nothing is spent)."""
        if self.capacity <= 0:
            return None
        if self._tokens(name, self._clock()) >= 1:
            return None
        return max(1, math.ceil(1 / self.rate))

    def spend(self, name: str) -> int | None:
        """Spend one request for `name`: None when allowed, else seconds to wait."""
        if self.capacity <= 0:
            return None
        now = self._clock()
        tokens = self._tokens(name, now)
        if tokens < 1:
            return max(1, math.ceil((1 - tokens) / self.rate))
        if len(self._buckets) >= _MAX_BUCKETS:
            self._prune(now)
        self._buckets[name] = (tokens - 1, now)
        return None

    def _prune(self, now: float) -> None:
        """Forget names whose buckets have refilled (they behave as new ones)."""
        for name in [n for n in self._buckets if self._tokens(n, now) >= self.capacity]:
            del self._buckets[name]
