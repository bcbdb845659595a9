"""Paired tests of the compare stage: settings scored on the same eval rows, compared row by row."""
from __future__ import annotations

import polars as pl

from runner.core.stats import paired_compare


def log_paired(ctx, rows: pl.DataFrame, pre: pl.DataFrame | None) -> None:
    """Row-by-row tests on the same eval rows: difference B - A with its paired-bootstrap 95 %
    interval and the exact McNemar p (compare.<B>_vs_<A>.<outcome>_diff, _diff_ci95, _p_mcnemar).
    student_post_plain vs teacher is the like-for-like pair when student_post is constrained."""
    t = rows.select("sample_id", gold_match="t_gold_match", exec_pass="t_exec_pass")
    s = rows.select("sample_id", gold_match="s_gold_match", exec_pass="s_exec_pass")
    pairs = [("post_vs_teacher", t, s)]
    if pre is not None:
        pairs.append(("post_vs_pre", pre.select("sample_id", "gold_match", "exec_pass"), s))
    if ctx.store.exists("student_post_plain"):
        plain = ctx.store.read("student_post_plain").select("sample_id", "gold_match", "exec_pass")
        pairs.append(("post_plain_vs_teacher", t, plain))
    for name, a, b in pairs:
        j = a.join(b, on="sample_id", how="inner", suffix="_b").sort("sample_id")
        ctx.metrics.log(f"compare.{name}.rows", j.height)
        for outcome in ("gold_match", "exec_pass"):
            x = j[outcome].fill_null(False).cast(pl.Int8).to_list()
            y = j[f"{outcome}_b"].fill_null(False).cast(pl.Int8).to_list()
            r = paired_compare(x, y) if j.height else None
            ctx.metrics.log(f"compare.{name}.{outcome}_diff", r["diff"] if r else None)
            ctx.metrics.log(f"compare.{name}.{outcome}_diff_ci95", [r["lo"], r["hi"]] if r else None)
            ctx.metrics.log(f"compare.{name}.{outcome}_p_mcnemar", r["p_mcnemar"] if r else None)
