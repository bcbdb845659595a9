"""Provider base class: configuration shared by every teacher/student backend.

A provider turns one `Request` into a `Completion` (or raises `ProviderError`). Everything
else (concurrency, rate limits, retries, timeouts, caching, accounting) is the engine's job,
so the engine knobs live here as plain attributes it reads. Subclasses are instantiated by
Hydra from `conf/provider/*.yaml`; their constructor arguments are the YAML keys.
"""
from __future__ import annotations

import contextlib
from typing import Any

from runner.core.stage import ConfigError, check_choice, check_range
from runner.engine.types import Completion, ProviderError, Request  # noqa: F401  (re-exported)


class Provider:
    """Subclass contract:
      kind                      label written to metrics (teacher.provider): litellm | simulated | local_hf
      validate()                config checks only; ConfigError naming the fix (e.g. the unset key variable)
      cache_identity()          everything that changes an answer, nothing secret (part of every cache key)
      setup()                   heavy one-time work (imports, model loading); idempotent
      session()                 context held while requests are being sent (default: nothing)
      async acomplete(request)  one attempt -> Completion, or raise ProviderError(kind, msg, retry_after)
      async aclose()            after the last attempt of a generate() call, on its loop (default: nothing)
      batched / complete_batch  in-process models: list of requests -> list of Completions (same order),
                                run in a worker thread in batches of up to batch_size
    """

    kind: str = "base"
    # In-process batched backends (local_hf) set batched=True and implement complete_batch().
    batched: bool = False
    # provider.mode values this backend supports (batch: the provider's batch API, runner.providers.batch)
    modes: tuple[str, ...] = ("online",)

    def __init__(self, model: str, *, concurrency: int = 16, rpm: float | None = None,
                 tpm: float | None = None, max_retries: int = 4, timeout_s: float = 60.0,
                 cache: bool = True, temperature: float = 0.0, max_tokens: int = 256,
                 stop: list[str] | None = None, seed: int | None = None, top_p: float | None = None,
                 params: dict[str, Any] | None = None, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, batch_size: int = 1, n: int = 1, mode: str = "online",
                 batch_poll_s: float = 30.0):
        self.model = model
        self.concurrency = concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.cache = cache
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stop = list(stop) if stop else None
        self.seed = seed
        self.top_p = top_p
        self.params = dict(params or {})
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        # best-of-n samples per question (runner.distill.vote) and online | batch (runner.providers.batch)
        self.n, self.mode, self.batch_poll_s = n, mode, batch_poll_s

    # --- configuration -------------------------------------------------------------------
    def session(self) -> contextlib.AbstractContextManager:
        """Held by the engine while it sends this provider's requests (e.g. a thread setting)."""
        return contextlib.nullcontext()

    def validate(self) -> None:
        """Cheap checks (no network, no model loading); raise ConfigError naming the fix."""
        if not self.model or not isinstance(self.model, str):
            raise ConfigError("provider.model must be a non-empty string (e.g. openai/gpt-4o-mini)")
        check_range("provider", "concurrency", self.concurrency, 1)
        check_range("provider", "rpm", self.rpm, 0, lo_open=True)
        check_range("provider", "tpm", self.tpm, 0, lo_open=True)
        check_range("provider", "max_retries", self.max_retries, 0)
        check_range("provider", "timeout_s", self.timeout_s, 0, lo_open=True)
        check_range("provider", "temperature", self.temperature, 0)
        check_range("provider", "max_tokens", self.max_tokens, 1)
        check_range("provider", "top_p", self.top_p, 0, 1)
        check_range("provider", "backoff_base_s", self.backoff_base_s, 0)
        check_range("provider", "backoff_max_s", self.backoff_max_s, 0)
        check_range("provider", "batch_size", self.batch_size, 1)
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ConfigError(f"provider.n={self.n!r} must be an integer >= 1 (samples per question)")
        check_choice("provider", "mode", self.mode, self.modes)
        check_range("provider", "batch_poll_s", self.batch_poll_s, 0, lo_open=True)
        if not isinstance(self.cache, bool):
            raise ConfigError(f"provider.cache must be true or false, got {self.cache!r}")

    def generation_params(self) -> dict[str, Any]:
        """Sampling parameters sent with each request (None values left out)."""
        out = {"temperature": self.temperature, "max_tokens": self.max_tokens, "stop": self.stop,
               "seed": self.seed, "top_p": self.top_p, **self.params}
        return {k: v for k, v in out.items() if v is not None}

    def cache_identity(self) -> dict[str, Any]:
        """Everything that changes an answer, nothing secret. Part of every cache key."""
        return {"kind": self.kind, "model": self.model, "params": self.generation_params()}

    # --- generation ----------------------------------------------------------------------
    def setup(self) -> None:
        """Heavy one-time preparation (imports, model loading), called by the engine before the
        first request and outside any timeout. Must be idempotent: generate() calls it every time."""

    async def acomplete(self, request: Request) -> Completion:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.acomplete")

    async def aclose(self) -> None:
        """Awaited by the engine on its event loop when a generate() call ends (e.g. an HTTP session)."""

    def complete_batch(self, requests: list[Request]) -> list[Completion]:  # pragma: no cover
        """Batched providers only: one Completion per request, same order (runs in a worker thread)."""
        raise NotImplementedError(f"{type(self).__name__}.complete_batch")

    def describe(self) -> str:
        return f"{self.kind}:{self.model}"

    # What the token counts are: the provider's reported usage unless a subclass says otherwise.
    token_counter = "provider-reported usage"

    def cost_reason(self) -> str:
        """Why this provider's cost is null (asked only when it is)."""
        return f"{self.kind} reported no price for model {self.model} (litellm's price map has none)"

    def notices(self) -> list[str]:
        """Lines the run must show at its start and in its summary (e.g. that it is simulated)."""
        return []

    def endpoint(self) -> str:
        """Where requests go, for error messages (never a secret)."""
        return f"{self.kind} model {self.model}"
