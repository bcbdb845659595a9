"""Wall-time forecast: the engine's sliding window replayed on resampled pilot latencies.

Why a simulation and not sum(latency) / concurrency: the tail (the last requests finish one by
one), rate-limit pacing and retries after backoff all stretch the makespan, and they interact.
The replay mirrors runner.engine: `concurrency` workers take requests from one FIFO queue in
order of readiness; each attempt waits for the rpm / tpm pacers (even spacing, the engine's
Pacer), takes a latency drawn from the pilot's latency model (below), and fails with
the pilot's per-attempt failure rate; a failure goes back on the queue after the engine's
backoff, uniform(0.5, 1) * min(backoff_max_s, backoff_base_s * 2^(attempt-1)), up to
max_retries. Assumption (stated in forecast.json): a failed attempt takes as long as a
successful one. The makespan is never below attempts x client CPU per attempt (one event loop).

Latency model: a lognormal fitted to the pilot's median and interquartile range
(sigma = ln(q75 / q25) / 1.349), sampled afresh in every replay (parametric bootstrap). Why not
the raw pilot values: a pilot runs cold (first connections, client warm-up) and a few of its
~50 latencies come out several times the steady-state tail; resampled as they are, they inflate
the mean and the forecast by tens of percent (bench/forecast_accuracy.py: +50 %). Quartiles
ignore them. With fewer than 8 pilot latencies, or a zero median, the raw values are resampled.
"""
from __future__ import annotations

import heapq
import math
import random


def simulate_wall(latencies: list[float], n_requests: int, *, concurrency: int, fail_p: float,
                  max_retries: int, backoff_base_s: float, backoff_max_s: float, rpm: float | None,
                  tpm: float | None, tokens_per_request: float, cpu_per_attempt_s: float = 0.0,
                  seed: int = 0, trials: int | None = None) -> dict:
    """p10/p50/p90 of the simulated makespan over `trials` bootstrap replays."""
    base = {"method": "sliding-window replay of the engine over latencies drawn from the pilot's",
            "assumption": "a failed attempt takes as long as a successful one",
            "concurrency": concurrency, "failure_rate_per_attempt": fail_p, "rpm": rpm, "tpm": tpm,
            "cpu_per_attempt_s": cpu_per_attempt_s}
    if n_requests <= 0:
        return {**base, "p10_s": 0.0, "p50_s": 0.0, "p90_s": 0.0, "trials": 0}
    if not latencies:
        return {**base, "p10_s": None, "p50_s": None, "p90_s": None, "trials": 0,
                "reason": "the pilot measured no latency"}
    rng = random.Random(seed)
    model = latency_model(latencies)
    base["latency_model"] = {k: v for k, v in model.items() if k != "values"}
    trials = trials or max(15, min(200, 300_000 // n_requests))
    runs = [_replay(model, n_requests, concurrency, fail_p, max_retries, backoff_base_s, backoff_max_s,
                    rpm, tpm, tokens_per_request, cpu_per_attempt_s, rng) for _ in range(trials)]
    spans = sorted(max(window, attempts * cpu_per_attempt_s) for window, attempts in runs)
    q = lambda p: spans[min(len(spans) - 1, int(p * len(spans)))]  # noqa: E731
    window = sorted(w for w, _ in runs)[len(runs) // 2]
    cpu_bound = sorted(a for _, a in runs)[len(runs) // 2] * cpu_per_attempt_s
    return {**base, "p10_s": q(0.1), "p50_s": q(0.5), "p90_s": q(0.9), "trials": trials,
            "window_p50_s": window, "cpu_bound_s": cpu_bound}


def latency_model(latencies: list[float]) -> dict:
    s = sorted(latencies)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    median, q25, q75 = q(0.5), q(0.25), q(0.75)
    if len(s) < 8 or median <= 0 or q25 <= 0:
        return {"kind": "bootstrap of the pilot latencies", "n": len(s), "values": s}
    return {"kind": "lognormal fitted to the pilot's median and IQR", "n": len(s), "median_s": median,
            "sigma": math.log(q75 / q25) / 1.3489795003921634, "pilot_mean_s": sum(s) / len(s)}


def _replay(model: dict, n: int, c: int, fail_p: float, max_retries: int, b0: float, bmax: float,
            rpm: float | None, tpm: float | None, tokens: float, cpu: float, rng: random.Random
            ) -> tuple[float, int]:
    workers = [0.0] * max(1, min(c, n))
    ready = [(0.0, i, 1) for i in range(n)]  # (ready time, FIFO order, attempt)
    heapq.heapify(ready)
    req_gap = 60.0 / rpm if rpm else 0.0
    tok_gap = tokens * 60.0 / tpm if tpm else 0.0
    next_req = next_tok = loop_free = 0.0
    end, attempts, order = 0.0, 0, n
    rand = rng.random
    if "values" in model:
        values = model["values"]
        draw = lambda: rng.choice(values)  # noqa: E731
    else:
        median, sigma, gauss = model["median_s"], model["sigma"], rng.gauss
        draw = lambda: median * math.exp(sigma * gauss(0.0, 1.0))  # noqa: E731
    while ready:
        t_ready, _, attempt = heapq.heappop(ready)
        free = heapq.heappop(workers)
        start = max(t_ready, free, next_req, next_tok, loop_free)
        loop_free = start + cpu  # the one event loop: an attempt's client CPU is serial
        if req_gap:
            next_req = start + req_gap
        if tok_gap:
            next_tok = start + tok_gap
        done = start + draw()
        attempts += 1
        heapq.heappush(workers, done)
        if fail_p and attempt <= max_retries and rand() < fail_p:
            backoff = min(bmax, b0 * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
            order += 1
            heapq.heappush(ready, (done + backoff, order, attempt + 1))
        end = max(end, done)
    return end, attempts
