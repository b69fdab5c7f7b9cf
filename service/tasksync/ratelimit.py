"""Token buckets: the one rate-limit mechanism behind every limit (inbound frames, outbound
events per user, replayed events per user, publish requests per API key). Pure, with an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows `rate` actions per second on average and bursts of up to `burst`."""

    __slots__ = ("_clock", "_tokens", "burst", "rate", "stamp")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._clock = clock
        # When the bucket was last refilled.
        self.stamp = clock()

    def allow(self, cost: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens will be there (0 if they are now)."""
        return max(0.0, (cost - self._tokens) / self.rate)

    def is_full(self) -> bool:
        refilled = self._tokens + (self._clock() - self.stamp) * self.rate
        return refilled >= self.burst

    def reconfigure(self, rate: float, burst: float) -> None:
        """Apply new limits (a reloaded limits file) without refilling the bucket."""
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, float(burst))


class BucketsByKey:
    """One bucket per key (user, API key), created on first use. Buckets that are full again
    carry no information, so they are pruned to keep memory bounded by active keys."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._next_prune = clock() + 60

    def allow(self, key: str, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        allowed = bucket.allow(cost)
        if bucket.stamp > self._next_prune:
            self._prune()
        return allowed

    def retry_after(self, key: str) -> float:
        bucket = self._buckets.get(key)
        return bucket.retry_after() if bucket else 0.0

    def reconfigure(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        for bucket in self._buckets.values():
            bucket.reconfigure(rate, burst)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self) -> None:
        self._next_prune = self._clock() + 60
        for key, bucket in list(self._buckets.items()):
            if bucket.is_full():
                del self._buckets[key]
