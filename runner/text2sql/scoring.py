"""Execution scoring: exec pass and gold match of predicted SQL, and SQL token F1.

Gold match is execution accuracy: the predicted and the gold query return the same multiset
of rows (same order only when the gold query has ORDER BY). Values compare as follows:
NULL only equals NULL; numbers equal when within a relative tolerance of 1e-6 (so 1 == 1.0);
text equals text when their `nkey`s are equal (TabFact cells are lowercased/re-tokenised);
a number and a text value are equal when the text parses as that number (WikiSQL number
rule), else when their nkeys are equal.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass

import polars as pl

from runner.text2sql.cleaner import clean_sql
from runner.text2sql.executor import SqlExecutor
from runner.text2sql.normalize import format_number, nkey
from runner.text2sql.sql import parse_number

REL_TOL = 1e-6
_ORDER_BY = re.compile(r"\border\s+by\b", re.I)


def _value_key(v: object) -> object:
    if v is None:
        return None
    if isinstance(v, (bool, int, float)):
        return float(v)
    return ("s", nkey(v))


def _values_equal(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a_num, b_num = isinstance(a, (int, float)), isinstance(b, (int, float))
    if not a_num and isinstance(a, str) and b_num:
        a, b, a_num, b_num = b, a, True, False
    if a_num and b_num:
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-12)
    if a_num:  # number vs text: the text's number if it has one, else the nkeys
        parsed = parse_number(b)
        if parsed is not None:
            return math.isclose(float(a), float(parsed), rel_tol=REL_TOL, abs_tol=1e-12)
        return nkey(a) == nkey(b)
    return nkey(a) == nkey(b)


def _rows_equal(p: tuple, g: tuple) -> bool:
    return len(p) == len(g) and all(_values_equal(a, b) for a, b in zip(p, g))


def results_match(pred_rows, gold_rows, ordered: bool = False) -> bool:
    """Multiset (or, when `ordered`, sequence) equality of result rows. None never matches."""
    if pred_rows is None or gold_rows is None:
        return False
    pred_rows, gold_rows = list(pred_rows), list(gold_rows)
    if len(pred_rows) != len(gold_rows):
        return False
    # Fast path: exact keys (floats, nkeys) decide most comparisons without pairing rows.
    pk = [tuple(_value_key(v) for v in r) for r in pred_rows]
    gk = [tuple(_value_key(v) for v in r) for r in gold_rows]
    if pk == gk or (not ordered and len(pk) > 1 and Counter(pk) == Counter(gk)):
        return True
    if ordered:
        return all(_rows_equal(tuple(p), tuple(g)) for p, g in zip(pred_rows, gold_rows))
    # Tolerant pairing (rounding, number-vs-text). Greedy: exact for all but pathological
    # cases where one value is within tolerance of two different gold values.
    unused = [tuple(g) for g in gold_rows]
    for p in pred_rows:
        p = tuple(p)
        for i, g in enumerate(unused):
            if _rows_equal(p, g):
                del unused[i]
                break
        else:
            return False
    return True


def gold_result_matches(rows, gold_result) -> bool:
    """Executed rows vs the dataset's `gold_result` (first-column values; list or JSON text)."""
    if isinstance(gold_result, str):
        gold_result = json.loads(gold_result)
    if rows is None or gold_result is None:
        return False
    if any(len(r) != 1 for r in rows):
        return False
    return results_match(rows, [(v,) for v in gold_result])


@dataclass
class Scored:
    """One prediction against its gold query: the columns every scoring path adds."""

    exec_pass: bool
    exec_error: str | None
    exec_error_detail: str | None
    exec_s: float
    gold_match: bool
    rows: list | None  # the prediction's result rows when it executed


def score_sql(executor: SqlExecutor, sql: str, gold_sql: str | None, table: str | None = None) -> Scored:
    """Execute a cleaned prediction and compare it with the gold query's result.

    Empty SQL never passes nor matches; gold match is results_match against the LRU-cached gold
    result, ordered only if the gold has ORDER BY. `table`: the row's real table (see bind_alias)."""
    gold = executor.execute_gold(gold_sql, table) if gold_sql else None
    t0 = time.perf_counter()
    # Identical text on the same read-only table gives the same result: reuse the gold run.
    pred = gold if gold is not None and sql and sql == gold_sql else executor.execute(sql, table)
    elapsed = time.perf_counter() - t0
    passed = bool(sql) and pred.ok
    matched = passed and gold is not None and gold.ok and results_match(
        pred.rows, gold.rows, ordered=bool(_ORDER_BY.search(gold_sql)))
    return Scored(passed, None if passed else pred.error_kind, None if passed else pred.error, elapsed,
                  matched, pred.rows if passed else None)


SCORED_TYPES = {"exec_pass": pl.Boolean, "exec_error": pl.String, "exec_error_detail": pl.String,
                "exec_s": pl.Float64, "gold_match": pl.Boolean}


def score_predictions(df: pl.DataFrame, executor: SqlExecutor, text_col: str = "text") -> pl.DataFrame:
    """Clean, execute and compare each prediction in `df[text_col]` with `df['gold_sql']`.

    Adds clean_sql, clean_removed, exec_pass, exec_error (error kind or null),
    exec_error_detail (message), exec_s (seconds, pred query) and gold_match. A `sql_table`
    column, when present, is the real table each row's alias stands for.
    """
    missing = [c for c in ("sample_id", "gold_sql", text_col) if c not in df.columns]
    if missing:
        raise ValueError(f"score_predictions needs columns {missing}; got {df.columns}")
    tables = df["sql_table"].to_list() if "sql_table" in df.columns else [None] * df.height
    cleaned = [clean_sql(t) for t in df[text_col].to_list()]
    scored = [score_sql(executor, c.sql, g, t) for c, g, t in zip(cleaned, df["gold_sql"].to_list(), tables)]
    return df.with_columns(
        pl.Series("clean_sql", [c.sql for c in cleaned], dtype=pl.String),
        pl.Series("clean_removed", [list(c.removed) for c in cleaned], dtype=pl.List(pl.String)),
        *[pl.Series(k, [getattr(s, k) for s in scored], dtype=t) for k, t in SCORED_TYPES.items()])


_TOKEN = re.compile(r"""
    "(?:[^"]|"")*" | `[^`]*` | \[[^\]]*\]      # quoted identifiers
  | '(?:[^']|'')*'                            # string literals
  | \d+(?:\.\d+)?|\.\d+                       # numbers
  | \w+                                       # keywords and bare identifiers
  | <=|>=|<>|!=|==|\|\| | [^\s\w]             # operators and punctuation
""", re.X)


def sql_tokens(sql: str) -> list[str]:
    """Normalised tokens: identifiers unquoted and lowercased, literals by nkey, numbers formatted."""
    tokens = []
    for tok in _TOKEN.findall(sql or ""):
        c = tok[0]
        if c in "\"`[":
            tokens.append(tok[1:-1].replace('""', '"').lower())
        elif c == "'":
            tokens.append("'" + nkey(tok[1:-1].replace("''", "'")) + "'")
        elif c.isdigit() or (c == "." and len(tok) > 1):
            tokens.append(format_number(float(tok)))
        elif tok != ";":
            tokens.append(tok.lower())
    return tokens


def token_f1(pred: str, gold: str) -> float:
    """F1 of the token multisets (2PR/(P+R)); an empty prediction scores 0."""
    p, g = Counter(sql_tokens(pred)), Counter(sql_tokens(gold))
    if not p or not g:
        return 0.0
    common = sum((p & g).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)
