"""Quality figures of a set of scored rows: the numbers in metrics.json, the gate and the
quality_*.json reports. Rates are over ALL rows given (a provider error or empty output counts
as a failure, never dropped from the denominator); a judge mean is over rows with a score and
is None when no row has one.
"""
from __future__ import annotations

from typing import Any

import polars as pl

from runner.core.stats import mean_ci, wilson


def _rate(df: pl.DataFrame, col: str) -> float | None:
    if df.height == 0 or col not in df.columns:
        return None
    return float(df[col].fill_null(False).cast(pl.Float64).mean())


def judge_stats(df: pl.DataFrame) -> dict[str, float | None]:
    if "judge_score" not in df.columns:
        return {"judge_mean": None, "judge_min": None, "judge_max": None, "judge_scored": 0}
    s = df["judge_score"].drop_nulls()
    if s.len() == 0:
        return {"judge_mean": None, "judge_min": None, "judge_max": None, "judge_scored": 0}
    return {"judge_mean": float(s.mean()), "judge_min": float(s.min()), "judge_max": float(s.max()),
            "judge_scored": int(s.len())}


def rates(df: pl.DataFrame) -> dict[str, Any]:
    """total, exec_pass_rate, gold_match_rate, empty_rate, error_rate, judge_mean/min/max, and
    beside each rate and the judge mean its 95 % interval `<key>_ci95` = [lo, hi] (Wilson over all
    rows; t-interval over the scored rows for the judge mean; null when nothing was measured)."""
    out: dict[str, Any] = {"total": df.height}
    hits: dict[str, pl.Series] = {}
    for key, col in (("exec_pass_rate", "exec_pass"), ("gold_match_rate", "gold_match")):
        out[key] = _rate(df, col)
        if col in df.columns:
            hits[key] = df[col].fill_null(False).cast(pl.Boolean)
    if "clean_sql" in df.columns:
        hits["empty_rate"] = df["clean_sql"].fill_null("").str.strip_chars() == ""
        out["empty_rate"] = float(hits["empty_rate"].mean()) if df.height else None
    if "error" in df.columns:
        hits["error_rate"] = df["error"].is_not_null()
        out["error_rate"] = float(hits["error_rate"].mean()) if df.height else None
    for key, s in hits.items():
        out[f"{key}_ci95"] = list(wilson(int(s.sum()), df.height)) if df.height else None
    out.update(judge_stats(df))
    if "judge_score" in df.columns:
        _, lo, hi = mean_ci(df["judge_score"].to_list())
        out["judge_mean_ci95"] = [lo, hi] if lo is not None else None
    return out


def with_intervals(r: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`keys` of a rates() dict, each followed by its `_ci95` when rates() gave one."""
    return {name: r.get(name) for k in keys for name in (k, f"{k}_ci95") if name == k or name in r}


def counts(df: pl.DataFrame, col: str) -> dict[str, int]:
    if col not in df.columns or df.height == 0:
        return {}
    vc = df[col].drop_nulls().value_counts(sort=True)
    return {str(k): int(v) for k, v in vc.iter_rows()}


SIMULATED_NOTE = ("the teacher is SIMULATED: an offline stand-in whose answers derive from each question's gold "
                  "SQL through a seeded error model, so its accuracy is a calibration (conf/provider/simulated.yaml), "
                  "not a measurement of any model")


def simulated_flag(df: pl.DataFrame) -> bool | None:
    """True when any row was answered by the simulated teacher (the teacher stage's `simulated`
    column); None for frames made before that column existed."""
    return bool(df["simulated"].fill_null(False).any()) if "simulated" in df.columns else None


def label(report: dict[str, Any], df: pl.DataFrame) -> dict[str, Any]:
    """`report` with `simulated` (and the note saying what that means) first."""
    sim = simulated_flag(df)
    return {"simulated": sim, **({"simulated_note": SIMULATED_NOTE} if sim else {}), **report}


def quality_report(df: pl.DataFrame, *, teacher_total: int) -> dict[str, Any]:
    """Report of rows that went through the filter (`keep`, `reject_reason`).

    keep_rate = kept / teacher_total, where teacher_total is the number of teacher rows of the
    train split BEFORE any filtering (not the already-filtered rows)."""
    kept = int(df["keep"].fill_null(False).sum()) if "keep" in df.columns else df.height
    report = {"total": df.height, "kept": kept, "rejected": df.height - kept,
              "teacher_total": teacher_total,
              "keep_rate": kept / teacher_total if teacher_total else None,
              **{k: v for k, v in rates(df).items() if k != "total"},
              "reject_reasons": counts(df, "reject_reason"),
              "exec_error_kinds": counts(df, "exec_error")}
    return label(report, df)
