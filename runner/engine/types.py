"""The contract between stages, the generation engine and providers.

Stages build `Request`s and get back one `Response` per request, in the same order, from
`runner.engine.generate(...)`. Providers only turn one request (or a batch, for in-process
models) into a `Completion` or raise `ProviderError`; retries, rate limits, concurrency,
caching and accounting are the engine's job, so every provider behaves the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    id: str
    messages: list[dict[str, str]]
    # Never sent to a real provider and never part of the cache key. The simulated teacher
    # reads the item's gold answer from here (it is labelled simulated everywhere).
    meta: dict[str, Any] = field(default_factory=dict)
    # Best-of-n: the k-th sample of the same prompt. Part of the cache key when > 0 (sample 0 keeps
    # the key it always had), so raising provider.n later only pays for the new samples.
    sample: int = 0


@dataclass
class Completion:
    """What a provider returns for one request."""

    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None  # None = unknown, never a silent 0


@dataclass
class Response:
    """One row of a generation artifact: the outcome of a request after retries."""

    id: str
    text: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    latency_s: float | None
    attempts: int
    cache_hit: bool
    error: str | None = None
    # rate_limit | server | timeout | connection | malformed | auth | not_found | bad_request | other
    error_kind: str | None = None


class ProviderError(Exception):
    """A failed attempt. `kind` decides whether the engine retries; `retry_after` is honoured."""

    RETRYABLE = frozenset({"rate_limit", "server", "timeout", "connection", "malformed"})
    # The provider cannot be reached or refuses us (connection/DNS/TLS, 401/403, 404 model):
    # no answer will come whatever the prompt, so the teacher stops on these before judging quality.
    TRANSPORT = frozenset({"connection", "auth", "not_found"})

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE


@dataclass
class GenerationResult:
    """What `runner.engine.generate` returns: one response per request (same order) and run totals.

    `stats` keys (all counts are for this call only):
      total       requests given to generate()
      cache_hits  answered from the response cache (nothing sent)
      requests    distinct requests sent to the provider (cache misses); retries are not counted here
      attempts    provider calls including retries (attempts - requests = retries)
      errors      responses that ended with an error after retries
      tokens_in / tokens_out / cost_usd
                  summed over responses answered by the provider in THIS call (cache hits cost nothing
                  now); None when any of those responses did not report the value (unknown, never 0).
                  Failed attempts report nothing and are not included (providers do not bill 429/5xx;
                  a timed-out attempt may have been billed, which cannot be known client-side)
      wall_s      wall-clock seconds of the call, provider.setup() excluded (generation only)
      setup_s     seconds in provider.setup(): client import, warm-up (0 when all were cache hits)
      latency_p50_s / latency_p95_s  over responses answered in this call (None when there are none)
    """

    responses: list[Response]
    stats: dict[str, Any]
