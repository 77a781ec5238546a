"""Token-bucket rate limits per key (a client address, a token digest).

    limiter = RateLimiter(per_min=600, burst=100, what="client address")
    limiter.check("203.0.113.9")      # raises HTTP 429 with Retry-After when the bucket is empty

Each key's bucket holds up to ``burst`` requests and refills at ``per_min / 60`` a second, so
a client may send ``burst`` requests at once and ``per_min`` a minute after that. Buckets of
the least recently seen keys are forgotten past ``max_keys``: a forgotten bucket would have
refilled by the time its key comes back, unless the server sees that many clients a burst.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import HTTPException

__all__ = ["RateLimiter"]


class RateLimiter:
    """Thread-safe token buckets, one per key; ``check`` raises 429 when a key is over."""

    def __init__(
        self,
        per_min: float,
        burst: int,
        what: str,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not per_min > 0 or burst < 1:
            raise ValueError(f"per_min must be > 0 and burst >= 1, got {per_min!r}, {burst!r}")
        self.per_min = per_min
        self.burst = burst
        self.what = what
        self.max_keys = max_keys
        self.clock = clock
        self._rate_per_s = per_min / 60.0
        #: key -> (tokens left, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0.0 if allowed, else seconds to wait."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self._rate_per_s)
            wait_s = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait_s = (1.0 - tokens) / self._rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait_s

    def check(self, key: str) -> None:
        """Raise HTTP 429 with ``Retry-After`` (whole seconds) when ``key`` is over its limit."""
        wait_s = self.take(key)
        if wait_s > 0:
            retry_after = max(1, math.ceil(wait_s))
            raise HTTPException(
                429,
                f"rate limit exceeded: {self.per_min:g} requests a minute per {self.what} "
                f"(bursts of {self.burst}); retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
