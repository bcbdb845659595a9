"""The execute stage on hostile teacher SQL: what runaway queries cost at a fixed 1 s budget
(the old default) and at the `auto` budget (a multiple of the slowest gold query, with a floor).

Builds 300 real WikiSQL train rows (conf/experiment/wikisql_1k: load -> hash -> prompt, in-process),
answers every 8th row with a query that never ends (alternately an unbounded recursive CTE and a
7-way cross join of the row's table) and the rest with the gold SQL, then runs the execute stage's
frame function (`execute_frame`, the one executor and scorer) on the same rows at both budgets,
side by side, and replays every gold query at the auto budget.

    RUNNER_DATA_DIR=../shared/data python bench/hostile_execute.py          # 300 rows
    RUNNER_DATA_DIR=../shared/data python bench/hostile_execute.py --n 1000

Target (issue 11): the execute stage of 300 hostile rows <= 10 s, no gold query over budget.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import runner.resolvers  # noqa: E402,F401
from runner.app import execute  # noqa: E402
from runner.distill.evaluate import clean_frame, execute_frame, executor_from  # noqa: E402

CONF = str(Path(__file__).resolve().parent.parent / "conf")
RUNAWAY = ("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r",
           "SELECT COUNT(*) FROM t a, t b, t c, t d, t e, t f, t g")


def prompts_run(n: int, run_dir: Path, cache_dir: Path) -> dict:
    overrides = ["+experiment=wikisql_1k", f"dataset.n_train={n}", "dataset.n_eval=0", f"cache_dir={cache_dir}",
                 "'pipeline.skip=[teacher,clean,execute,judge,gate,filter,export,student_init,student_pre,"
                 "train,student_post,compare]'"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[o.strip("'") for o in overrides])
    with contextlib.redirect_stdout(io.StringIO()):
        result = execute(cfg, run_dir, experiment="hostile_execute")
    if result.status != "ok":
        raise SystemExit(f"set-up run ended with status {result.status}: {result.metrics.get('error')}")
    return result.metrics


def hostile_frame(run_dir: Path) -> pl.DataFrame:
    df = pl.read_parquet(run_dir / "artifacts" / "prompts.parquet")
    gen = [RUNAWAY[(i // 8) % 2] if i % 8 == 7 else gold for i, gold in enumerate(df["gold_sql"].to_list())]
    return clean_frame(df.with_columns(generation=pl.Series(gen, dtype=pl.String)))


def timed_execute(df: pl.DataFrame, db: dict, budget: float) -> tuple[float, pl.DataFrame]:
    with executor_from(db, timeout_s=budget) as ex:
        t0 = time.perf_counter()
        out = execute_frame(df, ex)
        return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="train rows (every 8th is runaway SQL)")
    ap.add_argument("--fixed-budget", type=float, default=1.0, help="the baseline's per-query budget (s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        run = Path(tmp) / "run"
        metrics = prompts_run(args.n, run, Path(tmp) / "cache")
        db = json.loads((run / "artifacts" / "database.json").read_text())
        df = hostile_frame(run)
        auto = db["timeout_s"]
        fixed_s, fixed = timed_execute(df, db, args.fixed_budget)
        auto_s, out = timed_execute(df, db, auto)
        with executor_from(db) as ex:
            gold = [ex.execute(s, t) for s, t in df.select("gold_sql", "sql_table").iter_rows()]
    runaway = sum(1 for i in range(df.height) if i % 8 == 7)
    gold_over = sum(r.error_kind == "timeout" for r in gold)
    gold_ok = sum(r.ok for r in gold)
    print(f"\n{df.height} rows, {runaway} runaway queries (every 8th: recursive CTE / 7-way cross join), "
          f"the rest gold SQL; measured on this machine, same rows, same run")
    print(f"slowest gold query at load: {metrics['load.gold_max_exec_s'] * 1e3:.3f} ms -> auto budget "
          f"{auto * 1e3:.1f} ms (floor {50:.0f} ms, 50x slowest gold, cap 1 s)")
    for name, secs, frame, budget in (("fixed", fixed_s, fixed, args.fixed_budget), ("auto", auto_s, out, auto)):
        timeouts = int((frame["exec_error"] == "timeout").sum())
        print(f"  budget {name:<5} {budget:>7.3f} s/query: execute stage {secs:7.2f} s, timeouts {timeouts}, "
              f"exec_pass {int(frame['exec_pass'].sum())}, gold_match {int(frame['gold_match'].sum())}")
    print(f"speed-up auto vs fixed on the same rows: {fixed_s / auto_s:.1f}x (target: auto <= 10 s)")
    print(f"gold replay at the auto budget: {gold_ok}/{len(gold)} execute, {gold_over} over budget")


if __name__ == "__main__":
    main()
