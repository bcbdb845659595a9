"""Clean, execute and judge generated SQL: frame functions (shared by the teacher's pilot, the
stages below and the student evaluation) and the stages `clean`, `execute`, `judge`, kept
separate so timing.json shows each cost on its own.

Teacher artifacts: teacher_raw -> (clean) teacher_clean -> (execute) teacher_exec
-> (judge) teacher_judged. Metric scopes: `teacher.*` = train split (the distillation
candidates), `teacher_eval.*` = eval split, `clean.*` / `exec_error.*` = every teacher row.
"""
from __future__ import annotations

import json

import polars as pl

from runner.core.stage import Stage
from runner.text2sql.cleaner import clean_sql
from runner.text2sql.executor import ERROR_KINDS, SqlExecutor
from runner.text2sql.quality import counts, rates, with_intervals
from runner.text2sql.scoring import SCORED_TYPES, score_sql

RESULT_ROWS_KEPT = 20  # rows of each predicted result kept in the artifact (for judges and reading)


def open_executor(ctx) -> SqlExecutor:
    """The sandboxed executor on the database the `load` stage built (artifacts/database.json)."""
    path = ctx.store.locate("database.json")
    if path is None:
        raise FileNotFoundError("artifacts/database.json not found: run the `load` stage first")
    return executor_from(json.loads(path.read_text()))


def executor_from(info: dict, timeout_s: float | None = None) -> SqlExecutor:
    """The executor a database.json describes (path, budget, row cap, table alias); `timeout_s`
    overrides its budget (benchmarks compare budgets on the same database)."""
    return SqlExecutor(info["path"], timeout_s=timeout_s if timeout_s is not None else info.get("timeout_s", 1.0),
                       max_rows=info.get("max_rows", 1000), table_alias=info.get("table_alias"))


def clean_frame(df: pl.DataFrame, text_col: str = "generation") -> pl.DataFrame:
    """Adds clean_sql ('' when the answer holds no SQL) and clean_removed (what was stripped)."""
    results = [clean_sql(t) for t in df[text_col].to_list()]
    return df.with_columns(pl.Series("clean_sql", [r.sql for r in results], dtype=pl.String),
                           pl.Series("clean_removed", [list(r.removed) for r in results],
                                     dtype=pl.List(pl.String)))


def execute_frame(df: pl.DataFrame, executor: SqlExecutor) -> pl.DataFrame:
    """Adds exec_pass, exec_error (kind), exec_error_detail, exec_s, gold_match (scoring.score_sql,
    the one scoring path) and pred_result (first rows of the prediction's result, as JSON)."""
    tables = df["sql_table"].to_list() if "sql_table" in df.columns else [None] * df.height
    scored = [score_sql(executor, sql, gold, table)
              for sql, gold, table in zip(df["clean_sql"].to_list(), df["gold_sql"].to_list(), tables)]
    pred_result = [json.dumps([list(r) for r in s.rows[:RESULT_ROWS_KEPT]], ensure_ascii=False, default=str)
                   if s.exec_pass else None for s in scored]
    return df.with_columns(*[pl.Series(k, [getattr(s, k) for s in scored], dtype=t)
                             for k, t in SCORED_TYPES.items()],
                           pl.Series("pred_result", pred_result, dtype=pl.String))


def judge_frame(df: pl.DataFrame, judge, ctx) -> tuple[pl.DataFrame, dict]:
    """Adds judge_score (float or null) and judge_reason; returns the judge's engine stats."""
    result = judge.judge(df, ctx)
    return df.with_columns(pl.Series("judge_score", result.scores, dtype=pl.Float64),
                           pl.Series("judge_reason", result.reasons, dtype=pl.String)), result.stats


def log_split_rates(ctx, df: pl.DataFrame, keys: tuple[str, ...]) -> None:
    """teacher.<key> for the train split, teacher_eval.<key> for the eval split."""
    for split, scope in (("train", "teacher"), ("eval", "teacher_eval")):
        part = df.filter(pl.col("split") == split)
        if part.height == 0 and split == "eval":
            continue
        for k, v in with_intervals(rates(part), keys).items():
            ctx.metrics.log(f"{scope}.{k}", v)


class CleanStage(Stage):
    reads = ("teacher_raw",)
    writes = ("teacher_clean",)

    def run(self, ctx):
        df = clean_frame(ctx.store.read("teacher_raw"))
        ctx.store.write("teacher_clean", df)
        ctx.timer.add_items(df.height)
        for tag, n in counts(df.explode("clean_removed"), "clean_removed").items():
            ctx.metrics.log(f"clean.{tag}", n)
        ctx.metrics.log("clean.rows", df.height)
        log_split_rates(ctx, df, ("total", "empty_rate", "error_rate"))


class ExecuteStage(Stage):
    reads = ("teacher_clean", "database.json")
    writes = ("teacher_exec",)

    def run(self, ctx):
        df = ctx.store.read("teacher_clean")
        with open_executor(ctx) as ex:
            df = execute_frame(df, ex)
        ctx.store.write("teacher_exec", df)
        ctx.timer.add_items(df.height)
        ctx.timer.add_latencies(df["exec_s"].to_list())
        seen = counts(df, "exec_error")
        for kind in ERROR_KINDS:  # every kind, 0 included: "no unknown_column" is a measurement too
            ctx.metrics.log(f"exec_error.{kind}", seen.get(kind, 0))
        log_split_rates(ctx, df, ("exec_pass_rate", "gold_match_rate"))


class JudgeStage(Stage):
    reads = ("teacher_exec",)
    writes = ("teacher_judged",)

    def __init__(self, judge):
        self.judge = judge

    def validate(self, ctx):
        self.judge.validate()
        ctx.extras["judge_kind"] = self.judge.kind  # read by the filter stage's validation

    def notices(self) -> list[str]:
        return self.judge.notices()

    def run(self, ctx):
        df, stats = judge_frame(ctx.store.read("teacher_exec"), self.judge, ctx)
        ctx.store.write("teacher_judged", df)
        ctx.timer.add_items(df.height)
        ctx.metrics.log("judge.kind", self.judge.kind)
        ctx.metrics.log("judge.simulated", bool(self.judge.notices()))
        for k in ("requests", "cache_hits", "errors", "tokens_in", "tokens_out", "cost_usd"):
            if k in stats:
                ctx.metrics.log(f"judge.{k}", stats[k])
        for reason, n in counts(df, "judge_reason").items():
            ctx.metrics.log(f"judge.null_reason.{reason}" if reason != "empty_sql" else "judge.empty_sql", n)
        log_split_rates(ctx, df, ("judge_mean", "judge_min", "judge_max"))
