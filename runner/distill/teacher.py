"""Stage `teacher`: the teacher answers every prompt through the generation engine, with the
pilot gate in between.

1. A seeded pilot of `gate.pilot_size` train rows is answered, cleaned, executed and judged,
   and the gate is checked on it. A failure (with gate.enforce=true) stops the run here: the
   money for the remaining rows is never spent.
2. The remaining rows are answered (both splits by default: the eval rows are needed to
   compare teacher and student on the same questions; only train rows are distilled).

Writes `teacher_raw`: the prompt columns plus `generation` (the raw answer) and the engine's
per-request records (latency_s, tokens_in, tokens_out, cost_usd, attempts, cache_hit, error).
"""
from __future__ import annotations

from typing import Any

import polars as pl

from runner.core.stage import ConfigError, Stage, check_range
from runner.distill import forecast as forecasting
from runner.distill import gate as gating
from runner.distill import vote
from runner.distill.evaluate import (
    clean_frame,
    execute_frame,
    judge_frame,
    open_executor,
)
from runner.engine import responses_frame
from runner.engine.failures import check_errors
from runner.providers.batch import generate_any
from runner.text2sql.prompt import build_request

_STAT_KEYS = ("total", "cache_hits", "deduplicated", "requests", "attempts", "errors", "wall_s", "setup_s")
_SUMMED_UNKNOWABLE = ("tokens_in", "tokens_out", "cost_usd")  # None stays None (unknown, not 0)


def answers_frame(prompts: pl.DataFrame, responses) -> pl.DataFrame:
    """The prompt rows with the engine's records joined by position (same order as requests)."""
    rf = responses_frame(responses).rename({"text": "generation"}).drop("id")
    return pl.concat([prompts, rf], how="horizontal")


def merge_stats(parts: list[dict[str, Any]], df: pl.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(p.get(k) or 0 for p in parts) for k in _STAT_KEYS}
    for k in _SUMMED_UNKNOWABLE:
        vals = [p.get(k) for p in parts]
        out[k] = None if any(v is None for v in vals) else sum(vals)
    fresh = df.filter(~pl.col("cache_hit") & pl.col("error").is_null())["latency_s"].drop_nulls()
    out["latency_p50_s"] = float(fresh.quantile(0.5)) if fresh.len() else None
    out["latency_p95_s"] = float(fresh.quantile(0.95)) if fresh.len() else None
    return out


class TeacherStage(Stage):
    reads = ("prompts", "database.json")
    writes = ("teacher_raw",)

    def __init__(self, provider, gate: gating.Gate, judge, answer_eval: bool = True, progress: bool = True,
                 max_error_rate: float = 0.2, filters=None):
        self.provider, self.gate, self.judge = provider, gate, judge
        self.filters = filters  # only read by the pilot forecast (expected kept rows)
        self.answer_eval, self.progress = answer_eval, progress
        self.max_error_rate = max_error_rate

    def validate(self, ctx):
        if not isinstance(self.answer_eval, bool):
            raise ConfigError(f"{self.name}.answer_eval must be true or false, got {self.answer_eval!r}")
        check_range(self.name, "max_error_rate", self.max_error_rate, 0, 1)
        self.provider.validate()
        self.gate.validate(judge_kind=self.judge.kind)
        self.judge.validate()

    def notices(self) -> list[str]:
        return [*self.provider.notices(), *self.judge.notices()]

    def _generate(self, ctx, prompts: pl.DataFrame, desc: str) -> tuple[pl.DataFrame, dict]:
        n = getattr(self.provider, "n", 1)  # best-of-n: n samples per row, voted (runner.distill.vote)
        requests = vote.expand([build_request(r) for r in prompts.to_dicts()], n)
        result = generate_any(self.provider, requests, cache_dir=ctx.cache_dir, desc=desc,
                              progress=self.progress, log=ctx.log, metrics=ctx.metrics)
        # `simulated` travels with every row (teacher.parquet, quality and gate reports), also
        # into runs that reuse these artifacts.
        frame = (answers_frame(prompts, result.responses) if n == 1 else
                 vote.voted_frame(ctx, prompts, result.responses, n, self.judge)).with_columns(
            simulated=pl.lit(self.provider.kind == "simulated", dtype=pl.Boolean))
        return frame, result.stats

    def _pilot(self, ctx, train: pl.DataFrame, prompts: pl.DataFrame | None = None) -> pl.DataFrame:
        pilot = train.sample(n=min(self.gate.pilot_size, train.height), seed=ctx.stage_seed("pilot"))
        answered, stats = self._generate(ctx, pilot, "teacher pilot")
        with open_executor(ctx) as ex:
            scored = execute_frame(clean_frame(answered), ex)
        scored, _ = judge_frame(scored, self.judge, ctx)
        ctx.store.write("teacher_pilot", scored)
        ctx.metrics.log("teacher.pilot_requests", stats["requests"])
        self._log_stats(ctx, merge_stats([stats], answered))  # recorded even if the gate stops the run
        self._check_errors(answered, "pilot")  # an unreachable provider is not a quality verdict
        # forecast.json on every run with a pilot, also one the quality gate then stops
        self._forecast = forecasting.pilot_forecast(ctx, self, train if prompts is None else prompts,
                                                    answered, scored, stats)
        gating.enforce(ctx, self.gate, self.gate.check(scored, phase="pilot", planned_total=train.height))
        forecasting.enforce_budget(ctx, self.gate, self._forecast)  # before any non-pilot request
        return answered, stats

    def _log_stats(self, ctx, stats: dict[str, Any]) -> None:
        ctx.metrics.log("teacher.provider", self.provider.kind)
        ctx.metrics.log("teacher.model", self.provider.model)
        ctx.metrics.log("teacher.simulated", self.provider.kind == "simulated")
        cost = stats.get("cost_usd")
        if self.provider.kind == "simulated":  # never paid: null whether or not the cache answered
            cost = None
        for k in ("requests", "cache_hits", "errors", "attempts", "deduplicated", "tokens_in", "tokens_out",
                  "latency_p50_s", "latency_p95_s"):
            ctx.metrics.log(f"teacher.{k}", stats.get(k))
        ctx.metrics.log("teacher.cost_usd", cost)
        reason = None if cost is not None else self.provider.cost_reason()
        if cost == 0 and not stats.get("requests") and stats.get("cache_hits"):  # requests: sent
            reason = "0: every answer came from the cache, so this run paid nothing (the first run paid)"
        ctx.metrics.log("teacher.cost_reason", reason)
        ctx.metrics.log("teacher.token_counter", self.provider.token_counter)
        # client import and warm-up apart from generation: the engine's ratio to the sliding-window
        # bound is about generation only
        ctx.metrics.log("teacher.setup_s", stats.get("setup_s"))
        ctx.metrics.log("teacher.generation_wall_s", stats.get("wall_s"))

    def _check_errors(self, df: pl.DataFrame, phase: str) -> None:
        # Checked with any gate (also gate=off): a run whose rows mostly errored is never ok.
        check_errors(df, provider=self.provider, max_error_rate=self.max_error_rate, phase=phase,
                     key=f"pipeline.stages.{self.name}.max_error_rate")

    def run(self, ctx):
        prompts = ctx.store.read("prompts")
        if not self.answer_eval:
            prompts = prompts.filter(pl.col("split") == "train")
        train = prompts.filter(pl.col("split") == "train")
        parts, stats = [], []
        done: set[str] = set()
        self._forecast = None
        if self.gate.pilot_size > 0:
            pilot_df, pilot_stats = self._pilot(ctx, train, prompts)
            parts.append(pilot_df)
            stats.append(pilot_stats)
            done = set(pilot_df["sample_id"].to_list())
        rest = prompts.filter(~pl.col("sample_id").is_in(sorted(done)))
        rest_df, rest_stats = self._generate(ctx, rest, "teacher")
        forecasting.report_actual(ctx, self._forecast, rest_stats)
        parts.append(rest_df)
        stats.append(rest_stats)
        order = prompts.select("sample_id").with_row_index("_order")
        df = pl.concat(parts).join(order, on="sample_id").sort("_order").drop("_order")
        merged = merge_stats(stats, df)
        self._log_stats(ctx, merged)
        vote.log_metrics(ctx, df)
        ctx.metrics.log("teacher.total_all_splits", df.height)
        ctx.store.write("teacher_raw", df)  # kept for inspection even when the error check fails
        ctx.metrics.log("teacher.error_rate", df["error"].is_not_null().mean() if df.height else None)
        self._check_errors(df, "teacher")
        ctx.timer.add_items(df.height)
        ctx.timer.add_latencies(df.filter(~pl.col("cache_hit"))["latency_s"].drop_nulls().to_list())
