"""Sandboxed SQL executor throughput on real WikiSQL questions (train_tabfact.matched.jsonl).

Prints queries/s for:
  * `execute_gold cold`  first pass over the gold queries with every cache empty (result LRU and
                         the nkey cache behind the collation): each query runs and is cached
  * `execute_gold warm`  later passes: every query is an LRU hit
  * `execute`            every query run by SQLite (sandbox, time budget, row cap), no result cache
  * `score warm`         score_predictions rows/s with the gold cache warm: clean + run the
                         prediction (a different SQL text than the gold, so it really executes)
                         + compare results; the per-row cost the pipeline's execute stage pays
The process is pinned to one core when the OS allows it (target: >= 10,000 q/s warm).

    RUNNER_DATA_DIR=../shared/data python bench/executor_throughput.py              # 5,000 questions
    RUNNER_DATA_DIR=../shared/data python bench/executor_throughput.py --questions 1000 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402

from runner.core.context import default_cache_dir  # noqa: E402
from runner.text2sql.data import find_data_root, load_questions, load_tables  # noqa: E402
from runner.text2sql.database import build_database, table_schema  # noqa: E402
from runner.text2sql.executor import SqlExecutor  # noqa: E402
from runner.text2sql.normalize import text_key  # noqa: E402
from runner.text2sql.scoring import score_predictions  # noqa: E402
from runner.text2sql.sql import render_sql  # noqa: E402


def best_rate(n: int, fn, repeat: int) -> float:
    """Highest queries/s over `repeat` runs (the least disturbed by other processes)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=5000, help="first N matched questions")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is printed")
    ap.add_argument("--data-dir", default=None, help="data root (default $RUNNER_DATA_DIR)")
    ap.add_argument("--cache-dir", default=None, help="database cache (default $RUNNER_CACHE_DIR)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    root = find_data_root(args.data_dir)
    q = load_questions(root).head(args.questions)
    tables = load_tables(root, set(q["table_id"].unique().to_list()))
    t0 = time.perf_counter()
    db = build_database(tables, default_cache_dir(args.cache_dir))
    build_s = time.perf_counter() - t0
    gold = []
    for tid, sel, agg, conds in q.select("table_id", "sel", "agg", "conds").iter_rows():
        name, cols, types = table_schema(tables[tid])
        gold.append(render_sql(name, cols, types, sel, agg, json.loads(conds)))
    # The "teacher" answer: same meaning, different text (lowercase keywords), so it is executed.
    preds = [g.replace("SELECT ", "select ", 1).replace(" FROM ", " from ", 1) for g in gold]
    frame = pl.DataFrame({"sample_id": q["question_id"], "gold_sql": gold, "text": preds})
    n = len(gold)
    print(f"{n} questions on {len(tables)} tables; database {db} ({build_s:.2f}s incl. cache check)")
    print(f"cpu affinity: {sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 'n/a'}")

    with SqlExecutor(db) as ex:
        text_key.cache_clear()  # cold = nothing cached anywhere, as in a fresh process
        t0 = time.perf_counter()
        cold = [ex.execute_gold(s) for s in gold]
        print(f"execute_gold cold  {n / (time.perf_counter() - t0):>10,.0f} queries/s "
              f"({sum(r.ok for r in cold)}/{n} ok; nkey cache also cold)")
        rate = best_rate(n, lambda: [ex.execute_gold(s) for s in gold], args.repeat)
        print(f"execute_gold warm  {rate:>10,.0f} queries/s")
        rate = best_rate(n, lambda: [ex.execute(s) for s in gold], args.repeat)
        print(f"execute            {rate:>10,.0f} queries/s (no result cache; nkey cache warm)")
        scored = None

        def score():
            nonlocal scored
            scored = score_predictions(frame, ex)

        rate = best_rate(n, score, args.repeat)
        print(f"score warm         {rate:>10,.0f} rows/s (clean + execute prediction + cached gold + compare); "
              f"exec pass {scored['exec_pass'].mean():.4f}, gold match {scored['gold_match'].mean():.4f}")


if __name__ == "__main__":
    main()
