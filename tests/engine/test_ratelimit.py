"""Rate limits: even spacing for requests/min, estimated-then-corrected spacing for tokens/min."""
from __future__ import annotations

import asyncio
import time

import pytest

from runner.engine.ratelimit import Pacer, RateLimiter


def test_pacer_spaces_units_evenly():
    p = Pacer(per_minute=600)  # one per 0.1 s
    waits = [p.reserve() for _ in range(5)]
    assert waits[0] == pytest.approx(0, abs=1e-3)
    assert [round(b - a, 3) for a, b in zip(waits, waits[1:])] == [0.1] * 4


def test_token_pacer_is_corrected_by_actual_usage():
    p = Pacer(per_minute=6000)  # 100 tokens/s
    p.reserve(500)
    before = p.next_free
    p.correct(-30)  # used 20, not 50
    assert p.next_free == pytest.approx(before - 0.3)
    p.correct(+100)
    assert p.next_free == pytest.approx(before - 0.3 + 1.0)


def test_rate_limiter_observed_rate():
    async def go():
        limiter = RateLimiter(rpm=1200, tpm=None)  # 20/s
        stamps = []
        for _ in range(21):
            await limiter.acquire(10)
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(go())
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert abs(rate - 20) / 20 < 0.10


def test_tpm_limits_tokens_per_second():
    async def go():
        limiter = RateLimiter(rpm=None, tpm=60_000)  # 1000 tokens/s
        t0 = time.monotonic()
        for _ in range(6):
            await limiter.acquire(100)  # 600 tokens: the 6th may start after 0.5 s
        return time.monotonic() - t0

    assert 0.45 < asyncio.run(go()) < 0.8
