"""What a trivial answer scores: the student's most frequent prediction applied to every eval row.

A student that writes one query for everything can still "execute" on most tables and reach a
token F1 near 0.58 against WikiSQL's gold SQL (the shape `SELECT "x" FROM t WHERE "y" = '...'`
is shared by every answer). Its scores only mean something beside this baseline, scored through
the same executor, scorer and token F1 as the student.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl

from runner.text2sql.scoring import score_sql, token_f1

# One prediction covering more than this share of rows is reported as a collapsed student.
COLLAPSE_SHARE = 0.5

FORMULAS = {
    "student_distinct_predictions": "number of distinct cleaned student SQL strings over the eval rows",
    "student_top_prediction_share": "rows whose cleaned SQL equals the most frequent one / rows",
    "constant_baseline": "the student's most frequent cleaned SQL applied to every eval row (against each "
                         "row's own table), scored by the same executor, scorer and token F1 as the student",
}


def prediction_spread(sqls: list[str]) -> dict[str, Any]:
    """Distinct predictions and the most frequent one with its share (empty SQL counts as one)."""
    counts = Counter(s or "" for s in sqls)
    if not counts:
        return {"distinct": 0, "top_sql": None, "top_share": None}
    top, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))  # ties: a fixed, reproducible pick
    return {"distinct": len(counts), "top_sql": top, "top_share": n / len(sqls)}


def constant_baseline(rows: pl.DataFrame, sql: str, executor) -> dict[str, Any]:
    """`sql` as the answer to every row of `rows` (gold_sql, sql_table): exec pass, gold match, F1."""
    tables = rows["sql_table"].to_list() if "sql_table" in rows.columns else [None] * rows.height
    scored = [score_sql(executor, sql, gold, table) for gold, table in zip(rows["gold_sql"].to_list(), tables)]
    n = len(scored)
    return {
        "sql": sql,
        "exec_pass_rate": sum(s.exec_pass for s in scored) / n if n else None,
        "gold_match_rate": sum(s.gold_match for s in scored) / n if n else None,
        "token_f1": sum(token_f1(sql, g) for g in rows["gold_sql"].to_list()) / n if n else None,
    }


def collapse_note(spread: dict[str, Any]) -> str | None:
    share = spread.get("top_share")
    if share is None or share <= COLLAPSE_SHARE:
        return None
    return (f"one prediction covers {share:.0%} of the eval rows ({spread['distinct']} distinct): the student "
            f"answers mostly with one query; compare its scores with the constant baseline, not with 0")
