"""Request and token rate limits as pacers (a token bucket holding at most one request's worth).

A provider's limit is "N per minute"; bursting a minute's worth at start-up is exactly what
gets a 429 storm, so requests are spaced evenly: each acquire reserves the next free time
slot. Token costs are estimated before sending and corrected once the real usage is known.
"""
from __future__ import annotations

import asyncio
import time


class Pacer:
    """At most `per_minute` units per minute, spread evenly (never a burst)."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / float(per_minute)  # seconds per unit
        self.next_free = 0.0

    def reserve(self, units: float = 1.0) -> float:
        """Reserve `units` and return how long to wait before using them."""
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + units * self.interval
        return start - now

    def correct(self, units: float) -> None:
        """Actual usage differed from the reservation by `units` (negative: give time back,
        but never a slot in the past, which would allow a burst)."""
        self.next_free += units * self.interval
        if units < 0:
            self.next_free = max(self.next_free, time.monotonic())


class RateLimiter:
    """Both limits of a provider; either may be None (unlimited)."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.requests = Pacer(rpm) if rpm else None
        self.tokens = Pacer(tpm) if tpm else None

    async def acquire(self, estimated_tokens: int) -> None:
        wait = 0.0
        if self.requests:
            wait = max(wait, self.requests.reserve(1))
        if self.tokens:
            wait = max(wait, self.tokens.reserve(estimated_tokens))
        if wait > 0:
            await asyncio.sleep(wait)

    def settle(self, estimated_tokens: int, actual_tokens: int | None) -> None:
        if self.tokens and actual_tokens is not None:
            self.tokens.correct(actual_tokens - estimated_tokens)
