"""The simulated teacher: an offline, seeded stand-in for an LLM, labelled `simulated` everywhere.

It answers from the gold information the stage puts in `request.meta` (never from the
prompt) through an explicit error model, so the downstream pipeline (cleaning, execution,
judging, filtering, distillation) sees realistic, imperfect teacher output:

  text2sql  gold SQL, possibly perturbed (wrong column / aggregation / literal typo), possibly
            broken (empty output, invalid SQL), possibly wrapped (<think>, prose, ``` fences)
  judge     strict JSON {"score": s}, s = clip(correct + N(0, judge_noise)) (rarely malformed)
  yesno     "yes" / "no", flipped with probability yesno_error_rate

It goes through exactly the same engine path as a real provider: latency is slept
(lognormal with the configured median and p95) and 429 / 5xx / timeout faults are raised as
ProviderError. Answers are deterministic per (seed, messages); faults and latency per
(seed, messages, attempt number), so a retried request can succeed and reruns reproduce.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from typing import Any

from runner.core.stage import ConfigError, check_range
from runner.engine.types import Completion, ProviderError, Request
from runner.providers.base import Provider
from runner.text2sql.quality import SIMULATED_NOTE
from runner.text2sql.sql import AGGS, render_sql

_Z95 = 1.6448536269514722  # standard normal 95th percentile

_RATES = ("think_rate", "prose_rate", "fence_rate", "wrong_column_rate", "wrong_agg_rate",
          "wrong_literal_rate", "empty_rate", "invalid_sql_rate", "judge_malformed_rate",
          "yesno_error_rate", "rate_429", "rate_5xx", "rate_timeout")

_PROSE = ("Here is the SQL query that answers the question:\n\n{sql}\n\nThis selects the requested value.",
          "To answer this, we query the table.\n{sql}",
          "The query is: {sql}")
SIMULATED_SAMPLES_NOTE = (
    "best-of-n on the SIMULATED teacher: its {n} samples per question are independent draws from the "
    "error model (seeded by sample index); a real model's samples are correlated, so vote gains here "
    "are an upper bound, not a measurement")
_THINK = ("<think>\nThe question asks for one column, filtered by the conditions. "
          "Let me find the matching columns in the table.\n</think>\n")


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class SimulatedProvider(Provider):
    kind = "simulated"

    # No defaults for the error model: its calibration lives in conf/provider/simulated.yaml only.
    def __init__(self, model: str, *, sim_seed: int, latency_median_s: float, latency_p95_s: float,
                 think_rate: float, prose_rate: float, fence_rate: float, wrong_column_rate: float,
                 wrong_agg_rate: float, wrong_literal_rate: float, empty_rate: float,
                 invalid_sql_rate: float, judge_noise: float, judge_malformed_rate: float,
                 yesno_error_rate: float, rate_429: float, rate_5xx: float, rate_timeout: float,
                 retry_after_s: float, **base: Any):
        super().__init__(model, **base)
        self.sim_seed = sim_seed
        self.latency_median_s = latency_median_s
        self.latency_p95_s = latency_p95_s
        self.think_rate, self.prose_rate, self.fence_rate = think_rate, prose_rate, fence_rate
        self.wrong_column_rate, self.wrong_agg_rate = wrong_column_rate, wrong_agg_rate
        self.wrong_literal_rate, self.empty_rate = wrong_literal_rate, empty_rate
        self.invalid_sql_rate = invalid_sql_rate
        self.judge_noise, self.judge_malformed_rate = judge_noise, judge_malformed_rate
        self.yesno_error_rate = yesno_error_rate
        self.rate_429, self.rate_5xx, self.rate_timeout = rate_429, rate_5xx, rate_timeout
        self.retry_after_s = retry_after_s
        self._attempts: dict[str, int] = {}  # per-request attempt counter (faults vary by attempt)

    def validate(self) -> None:
        super().validate()
        for name in _RATES:
            check_range("provider", name, getattr(self, name), 0, 1)
        check_range("provider", "judge_noise", self.judge_noise, 0)
        check_range("provider", "retry_after_s", self.retry_after_s, 0)
        check_range("provider", "latency_median_s", self.latency_median_s, 0)
        if self.latency_median_s > 0 and self.latency_p95_s < self.latency_median_s:
            raise ConfigError(f"provider.latency_p95_s={self.latency_p95_s} must be >= "
                              f"provider.latency_median_s={self.latency_median_s}")
        if self.rate_429 + self.rate_5xx + self.rate_timeout >= 1:
            raise ConfigError("provider.rate_429 + rate_5xx + rate_timeout must be < 1, "
                              "otherwise no request can ever succeed")

    def cache_identity(self) -> dict[str, Any]:
        # Every knob that changes an answer; latency and fault rates do not, so they are left out
        # (changing them must not invalidate cached answers).
        model = {n: getattr(self, n) for n in _RATES if not n.startswith("rate_")}
        return {**super().cache_identity(), "sim_seed": self.sim_seed, "judge_noise": self.judge_noise,
                "error_model": model}

    # --- latency and faults ----------------------------------------------------------------
    def sample_latency(self, rng: random.Random) -> float:
        if self.latency_median_s <= 0:
            return 0.0
        sigma = math.log(max(self.latency_p95_s, self.latency_median_s) / self.latency_median_s) / _Z95
        return self.latency_median_s * math.exp(sigma * rng.gauss(0.0, 1.0))

    @staticmethod
    def content_key(request: Request) -> str:
        return hashlib.sha256(json.dumps(request.messages, sort_keys=True).encode()).hexdigest()

    def attempt_draws(self, key: str, attempt: int) -> tuple[float, float]:
        """(latency, fault draw) of one attempt: a pure function of (seed, messages, attempt)."""
        rng = _rng("attempt", self.sim_seed, key, attempt)
        return self.sample_latency(rng), rng.random()

    async def acomplete(self, request: Request) -> Completion:
        # Best-of-n: sample k > 0 is an independent draw from the same error model (seeded by k).
        key = self.content_key(request) + (f"#{request.sample}" if request.sample else "")
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        latency, fault = self.attempt_draws(key, attempt)
        if latency > 0:
            await asyncio.sleep(latency)
        if fault < self.rate_429:
            raise ProviderError("rate_limit", "simulated 429 Too Many Requests", retry_after=self.retry_after_s)
        fault -= self.rate_429
        if fault < self.rate_5xx:
            raise ProviderError("server", "simulated 503 Service Unavailable")
        fault -= self.rate_5xx
        if fault < self.rate_timeout:
            raise ProviderError("timeout", "simulated request timeout")
        text = self.answer(request, _rng("answer", self.sim_seed, key))
        count = self._count()
        tokens_in = sum(count(m.get("content", "")) for m in request.messages)
        # Nobody is paid: cost is null with cost_reason(), never a silent 0.0.
        return Completion(text=text, tokens_in=tokens_in, tokens_out=count(text), cost_usd=None)

    # --- labels ----------------------------------------------------------------------------
    def _count(self):
        """Token counts from a real tokenizer (tiktoken cl100k_base, as the prompt stage uses),
        or a named estimate when it cannot be loaded."""
        if getattr(self, "_counter", None) is None:
            from runner.text2sql.prompt import token_counter

            fn, name = token_counter()
            self._counter = fn or _approx_tokens
            self._counter_name = (f"{name} (a stand-in: the simulated teacher has no tokenizer of its own)" if fn
                                  else f"estimate, ~4 characters per token ({name})")
        return self._counter

    @property
    def token_counter(self) -> str:  # type: ignore[override]
        self._count()
        return self._counter_name

    def cost_reason(self) -> str:
        return "simulated teacher: an offline stand-in, no provider is paid (null, not 0)"

    def notices(self) -> list[str]:
        if self.n > 1:
            return [SIMULATED_NOTE, SIMULATED_SAMPLES_NOTE.format(n=self.n)]
        return [SIMULATED_NOTE]

    # --- answers ---------------------------------------------------------------------------
    def answer(self, request: Request, rng: random.Random) -> str:
        task = request.meta.get("task")
        if task == "text2sql":
            return self.answer_text2sql(request.meta, rng)
        if task == "judge":
            return self.answer_judge(float(request.meta["correct"]), rng)
        if task == "yesno":
            truth = bool(request.meta["answer"])
            return "yes" if (truth != (rng.random() < self.yesno_error_rate)) else "no"
        raise ProviderError("bad_request", f"the simulated provider needs request.meta['task'] in "
                                           f"text2sql|judge|yesno, got {task!r} (request {request.id})")

    def answer_judge(self, correct: float, rng: random.Random) -> str:
        score = min(1.0, max(0.0, correct + rng.gauss(0.0, self.judge_noise)))
        if rng.random() < self.judge_malformed_rate:
            return f"I would rate this query about {score:.2f} out of 1."
        return json.dumps({"score": round(score, 2)})

    def answer_text2sql(self, meta: dict[str, Any], rng: random.Random) -> str:
        if rng.random() < self.empty_rate:
            return ""
        sql = perturbed_sql(meta, rng, self.wrong_column_rate, self.wrong_agg_rate, self.wrong_literal_rate)
        if rng.random() < self.invalid_sql_rate:
            sql = break_sql(sql, rng)
        if rng.random() < self.fence_rate:
            sql = f"```sql\n{sql}\n```"
        if rng.random() < self.prose_rate:
            sql = rng.choice(_PROSE).format(sql=sql)
        if rng.random() < self.think_rate:
            sql = _THINK + sql
        return sql


def perturbed_sql(meta: dict[str, Any], rng: random.Random, p_column: float, p_agg: float,
                  p_literal: float) -> str:
    """The gold query with independent content errors applied (each changes the result set)."""
    columns, types = list(meta["columns"]), list(meta["types"])
    sel, agg = int(meta["sel"]), int(meta["agg"])
    conds = [list(c) for c in meta["conds"]]
    if rng.random() < p_column and len(columns) > 1:
        sel = rng.choice([i for i in range(len(columns)) if i != sel])
    if rng.random() < p_agg:
        # COUNT on a plain select, plain select on an aggregate: MAX<->MIN on one row would match.
        agg = AGGS.index("COUNT") if agg == 0 else 0
    if rng.random() < p_literal and conds:
        i = rng.randrange(len(conds))
        conds[i][2] = wrong_literal(str(conds[i][2]), rng)
    return render_sql(meta["table"], columns, types, sel, agg, conds)


def wrong_literal(value: str, rng: random.Random) -> str:
    """A one-character typo (changes the value even under case/punctuation-insensitive
    comparison, as the WikiSQL executor uses), half the time also with changed case."""
    if not value:
        return "x"
    i = rng.randrange(len(value))
    ch = value[i]
    repl = str((int(ch) + 1) % 10) if ch.isdigit() else ("e" if ch.lower() != "e" else "a")
    typo = value[:i] + repl + value[i + 1:]
    return typo.swapcase() if rng.random() < 0.5 else typo


def break_sql(sql: str, rng: random.Random) -> str:
    """Syntactically invalid SQL of the kinds LLMs produce: typo'd keyword, truncation, stray paren."""
    choice = rng.randrange(3)
    if choice == 0:
        return sql.replace(" FROM ", " FORM ", 1)
    if choice == 1:
        return sql.split(" WHERE ")[0] + " WHERE" if " WHERE " in sql else sql + " WHERE"
    return sql.replace("SELECT ", "SELECT (", 1)


def _approx_tokens(text: str) -> int:
    return (len(text) + 3) // 4
