"""The generation engine: cache lookup, then a sliding window of requests with isolated retries.

Dispatch is a pool of `provider.concurrency` workers pulling from one FIFO queue: a finished
request frees its slot at once (greedy list scheduling, never lock-step batches). Each attempt
waits for the rate limiter, runs under the per-request timeout and either completes its rows
or, on a retryable error, is put back on the queue after exponential backoff with jitter (or
the server's Retry-After) WITHOUT holding a slot. A failure touches only its own rows.
Every answer is committed to the durable cache as it arrives.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.engine.backend import open_cache
from runner.engine.cache import ResponseCache, request_key
from runner.engine.progress import GenerationProgress
from runner.engine.ratelimit import RateLimiter
from runner.engine.records import responses_frame, run_stats  # noqa: F401  (responses_frame re-exported)
from runner.engine.types import (
    Completion,
    GenerationResult,
    ProviderError,
    Request,
    Response,
)


@dataclass
class _Job:
    """One distinct request to send; `rows` are the request indices it answers (duplicates share it)."""

    key: str
    request: Request
    rows: list[int]
    est_tokens: int
    attempts: int = 0
    late_hit: bool = False  # answered by another process through the shared cache


def generate(provider: Any, requests: list[Request], *, cache_dir: Path | str, desc: str = "teacher",
             progress: bool = True, log: logging.Logger | None = None) -> GenerationResult:
    """Answer every request: one Response each, in the same order; see GenerationResult for stats.

    Synchronous (runs its own event loop, in a helper thread if the caller's thread has one).
    Raises ConfigError from provider.validate() before anything is sent. Request failures never
    raise: they are recorded on their own rows (error, error_kind, attempts).
    """
    log = log or logging.getLogger("runner.engine")
    provider.validate()  # cheap; a missing key or bad knob fails here, before any request
    start = time.monotonic()
    identity = provider.cache_identity()
    keys = [request_key(identity, r.messages, r.sample) for r in requests]
    cache = open_cache(cache_dir) if provider.cache else None
    try:
        hits = cache.get_many(keys) if cache is not None else {}
        responses, jobs = _answer_hits(requests, keys, hits, provider.max_tokens)
        setup_s = 0.0
        if jobs:  # client import and warm-up, timed apart: generation wall must not include them
            t_setup = time.monotonic()
            provider.setup()
            setup_s = time.monotonic() - t_setup
        bar = GenerationProgress(len(requests), desc, progress, log)
        bar.advance(len(requests) - sum(len(j.rows) for j in jobs))
        dispatcher = _Dispatcher(provider, cache, requests, responses, bar, log)
        try:
            with provider.session():
                _run_sync(dispatcher.run(jobs))
        finally:
            bar.close()
    finally:
        if cache is not None:
            cache.close()
    n_hits = sum(k in hits for k in keys) + dispatcher.late_hits
    sent = [j for j in jobs if not j.late_hit and j.attempts > 0]  # a tripped breaker leaves some unsent
    stats = run_stats(responses, n_hits, sent, dispatcher.attempts, time.monotonic() - start - setup_s)
    stats["setup_s"] = setup_s
    # asked (rows given) vs sent (distinct requests that reached the provider = teacher.requests)
    log.info("%s: asked %d, %d cache hits, sent %d (%d attempts), %d errors, %.1f s",
             desc, stats["total"], stats["cache_hits"], stats["requests"], stats["attempts"],
             stats["errors"], stats["wall_s"])
    return GenerationResult(responses=responses, stats=stats)  # type: ignore[arg-type]


def _answer_hits(requests: list[Request], keys: list[str], hits: dict, max_tokens: int
                 ) -> tuple[list[Response | None], list[_Job]]:
    """Cache hits become responses; the rest become jobs (identical prompts share one job)."""
    responses: list[Response | None] = [None] * len(requests)
    jobs: dict[str, _Job] = {}
    for i, (req, key) in enumerate(zip(requests, keys)):
        if key in hits:
            completion, latency = hits[key]
            responses[i] = _response(req, completion, latency, attempts=0, cache_hit=True)
        elif key in jobs:
            jobs[key].rows.append(i)
        else:
            jobs[key] = _Job(key, req, [i], _estimate_tokens(req, max_tokens))
    return responses, list(jobs.values())


def _run_sync(coro) -> None:
    """asyncio.run, also when the caller's thread already runs an event loop (then in a fresh thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


class _Dispatcher:
    def __init__(self, provider: Any, cache: ResponseCache | None, requests: list[Request],
                 responses: list[Response | None], bar: GenerationProgress, log: logging.Logger):
        self.provider, self.cache, self.requests = provider, cache, requests
        self.responses, self.bar, self.log = responses, bar, log
        self.limiter = RateLimiter(provider.rpm, provider.tpm)
        self.batch_size = int(provider.batch_size) if getattr(provider, "batched", False) else 1
        self.attempts = 0
        self.late_hits = 0  # answered meanwhile by another process sharing the cache
        # A claim outlives the longest a live sender can take (all retries timing out), plus slack.
        self.claim_ttl_s = float(provider.timeout_s) * (int(provider.max_retries) + 1) + 60.0
        self.bug_logged = False
        self.rng = random.Random()  # backoff jitter only; never affects answers
        # Breaker: when the first attempts all fail on transport (refused, DNS, 401, 404 model),
        # every other request would too; stop instead of retrying each one for minutes.
        self.successes, self.transport_streak = 0, 0
        self.tripped: ProviderError | None = None
        self.waiting: dict[int, tuple[asyncio.TimerHandle, _Job]] = {}  # retries in backoff

    async def run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        for job in jobs:
            self.queue.put_nowait(job)
        self.remaining = len(jobs)
        self.finished = asyncio.Event()
        n_workers = min(int(self.provider.concurrency), len(jobs))
        self.trip_after = min(len(jobs), max(8, 2 * n_workers))
        workers = [asyncio.create_task(self.worker()) for _ in range(n_workers)]
        all_done = asyncio.create_task(self.finished.wait())
        try:
            # Workers never return; one that stops has crashed (e.g. the cache disk is full):
            # re-raise instead of waiting forever for rows it will never finish.
            await asyncio.wait([all_done, *workers], return_when=asyncio.FIRST_COMPLETED)
            for w in workers:
                if w.done() and not w.cancelled() and w.exception() is not None:
                    raise w.exception()
        finally:
            for task in (all_done, *workers):
                task.cancel()
            await asyncio.gather(all_done, *workers, return_exceptions=True)
            if hasattr(self.provider, "aclose"):
                await self.provider.aclose()  # e.g. the HTTP session bound to this loop

    async def worker(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self.attempt(batch)

    async def attempt(self, batch: list[_Job]) -> None:
        if self.tripped is not None:
            for job in batch:
                self.give_up(job, self.tripped)
            return
        if self.cache is not None:
            batch = self.claim(batch)
            if not batch:
                return
        est = sum(j.est_tokens for j in batch)
        await self.limiter.acquire(est)
        for job in batch:
            job.attempts += 1
        self.attempts += len(batch)
        t0 = time.monotonic()
        try:
            completions = await self.call(batch)
        except ProviderError as err:
            for job in batch:
                self.failed(job, err)
            return
        latency = time.monotonic() - t0
        self.successes += 1
        self.transport_streak = 0
        used = [(c.tokens_in or 0) + (c.tokens_out or 0) for c in completions]
        self.limiter.settle(est, sum(used) if all(c.tokens_out is not None for c in completions) else None)
        for job, completion in zip(batch, completions):
            self.succeeded(job, completion, latency)

    def claim(self, batch: list[_Job]) -> list[_Job]:
        """Keep the jobs this process may send. A job another process is sending right now
        waits for that answer (re-queued, no slot held); an answer that arrived meanwhile is a hit."""
        mine = []
        for job in batch:
            if job.attempts == 0:
                hit = self.cache.get_many([job.key]).get(job.key)
                if hit is not None:
                    self.late_hit(job, *hit)
                    continue
                if not self.cache.claim(job.key, self.claim_ttl_s):
                    asyncio.get_running_loop().call_later(0.05, self.queue.put_nowait, job)
                    continue
            mine.append(job)
        return mine

    def late_hit(self, job: _Job, completion: Completion, latency: float | None) -> None:
        for i in job.rows:
            self.responses[i] = _response(self.requests[i], completion, latency, 0, True)
        self.late_hits += len(job.rows)
        job.late_hit = True
        self.bar.advance(len(job.rows))
        self.job_done()

    async def call(self, batch: list[_Job]) -> list[Completion]:
        """One provider call; every failure comes out as ProviderError."""
        try:
            if getattr(self.provider, "batched", False):
                # In-process models run in a thread (no timeout: a thread cannot be cancelled).
                out = await asyncio.to_thread(self.provider.complete_batch, [j.request for j in batch])
            else:
                out = [await asyncio.wait_for(self.provider.acomplete(batch[0].request),
                                              self.provider.timeout_s)]
        except ProviderError:
            raise
        except asyncio.TimeoutError:
            raise ProviderError("timeout", f"no response within provider.timeout_s={self.provider.timeout_s}s")
        except Exception as e:  # a provider bug must not take the other rows down
            self.log.warning("provider raised %s: %s", type(e).__name__, e, exc_info=not self.bug_logged)
            self.bug_logged = True  # one traceback is enough; the rows carry the message
            raise ProviderError("other", f"{type(e).__name__}: {e}") from e
        if len(out) != len(batch) or not all(isinstance(c, Completion) and isinstance(c.text, str) for c in out):
            raise ProviderError("malformed", f"provider returned {out!r:.200} for {len(batch)} request(s)")
        return out

    def succeeded(self, job: _Job, completion: Completion, latency: float) -> None:
        if self.cache is not None:
            self.cache.put(job.key, completion, latency, self.provider.model)
        first, *dupes = job.rows
        self.responses[first] = _response(self.requests[first], completion, latency, job.attempts, False)
        for i in dupes:  # identical prompts in one call: answered by the same request, not re-sent
            self.responses[i] = _response(self.requests[i], completion, latency, 0, True)
        self.bar.advance(1, sent=True, tokens=(completion.tokens_in or 0) + (completion.tokens_out or 0),
                         cost=completion.cost_usd)
        if dupes:
            self.bar.advance(len(dupes))
        self.job_done()

    def failed(self, job: _Job, err: ProviderError) -> None:
        if err.kind in ProviderError.TRANSPORT and self.successes == 0:
            self.transport_streak += 1
            if self.tripped is None and self.transport_streak >= self.trip_after:
                self.trip(err)
        else:
            self.transport_streak = 0
        if self.tripped is None and err.retryable and job.attempts <= self.provider.max_retries:
            delay = err.retry_after if err.retry_after is not None else self.backoff(job.attempts)
            handle = asyncio.get_running_loop().call_later(delay, self.retry_now, job)
            self.waiting[id(job)] = (handle, job)
            return
        self.give_up(job, err)

    def retry_now(self, job: _Job) -> None:
        self.waiting.pop(id(job), None)
        self.queue.put_nowait(job)

    def trip(self, err: ProviderError) -> None:
        self.tripped = ProviderError(err.kind, f"not sent: the first {self.transport_streak} attempts all failed "
                                     f"({err.kind}), so the remaining requests were stopped. Last error: {err}")
        self.log.warning("%s: the first %d attempts all failed with %s errors and none succeeded; not sending "
                         "the rest. Last error: %s", self.provider.describe(), self.transport_streak, err.kind, err)
        for handle, job in list(self.waiting.values()):  # retries waiting in backoff end now
            handle.cancel()
            self.give_up(job, self.tripped)
        self.waiting.clear()

    def give_up(self, job: _Job, err: ProviderError) -> None:
        """Final: record the error on the job's rows (errors are not cached)."""
        for n, i in enumerate(job.rows):
            self.responses[i] = Response(id=self.requests[i].id, text=None, tokens_in=None, tokens_out=None,
                                         cost_usd=None, latency_s=None, attempts=job.attempts if n == 0 else 0,
                                         cache_hit=False, error=str(err)[:500], error_kind=err.kind)
        self.bar.advance(len(job.rows), error=True)
        if self.cache is not None and job.attempts > 0:  # attempts 0: never claimed
            self.cache.release(job.key)  # errors are not cached: let another process try again
        self.job_done()

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform(0.5, 1.0) * min(backoff_max_s, base * 2^(attempt-1))."""
        cap = min(self.provider.backoff_max_s, self.provider.backoff_base_s * 2 ** (attempt - 1))
        return cap * self.rng.uniform(0.5, 1.0)

    def job_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.finished.set()


def _response(req: Request, c: Completion, latency: float | None, attempts: int, cache_hit: bool) -> Response:
    return Response(id=req.id, text=c.text, tokens_in=c.tokens_in, tokens_out=c.tokens_out,
                    cost_usd=c.cost_usd, latency_s=latency, attempts=attempts, cache_hit=cache_hit)


def _estimate_tokens(req: Request, max_tokens: int) -> int:
    """Before sending: ~4 characters per prompt token plus the completion budget."""
    return sum(len(m.get("content") or "") for m in req.messages) // 4 + int(max_tokens)
