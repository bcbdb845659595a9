"""Overhead of the Text2SQL pipeline around generation: everything except the teacher's calls.

Runs the real pipeline in-process (conf/experiment/wikisql_1k, only the teacher stages) with the
simulated teacher at zero latency and no faults, the response cache off (so generation really
runs, and is then subtracted), and prints:

  * the stage breakdown (wall s, share, items/s) of the run
  * overhead = run wall - teacher generation wall (engine calls, pilot included)
  * post-processing = clean + execute + judge + filter + export (target <= 1 s for 1,000 rows)
  * executor queries/s on the run's gold and predicted SQL: gold cold (first execution, LRU
    empty), gold warm (every query again, answered from the LRU), predicted (never cached)

    RUNNER_DATA_DIR=../shared/data python bench/pipeline_overhead.py            # 1,000 train rows
    RUNNER_DATA_DIR=../shared/data python bench/pipeline_overhead.py --n-train 200   # quick check

The first run on a fresh cache dir also builds the SQLite database (in `load`); pass --cache-dir
of an earlier run to time a warm start.
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
from runner.text2sql.executor import SqlExecutor  # noqa: E402

CONF = str(Path(__file__).resolve().parent.parent / "conf")
TEACHER_STAGES = ("load", "hash", "prompt", "teacher", "clean", "execute", "judge", "gate", "filter", "export")
POST = ("clean", "execute", "judge", "filter", "export")


def run_pipeline(n_train: int, n_eval: int, run_dir: Path, cache_dir: Path) -> tuple[dict, dict]:
    overrides = ["+experiment=wikisql_1k", f"dataset.n_train={n_train}", f"dataset.n_eval={n_eval}",
                 f"cache_dir={cache_dir}", "provider.cache=false", "provider.latency_median_s=0",
                 "provider.latency_p95_s=0", "provider.rate_429=0", "provider.rate_5xx=0",
                 "provider.rate_timeout=0", "pipeline.stages.teacher.progress=false"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    # Only the teacher half of the pipeline (student stages, if configured, are not measured here).
    extra = [s for s in cfg.pipeline.stages if s not in TEACHER_STAGES]
    cfg.pipeline.skip = list(extra)
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary table; ours follows
        result = execute(cfg, run_dir, experiment="pipeline_overhead")
    if result.status != "ok":
        raise SystemExit(f"pipeline run ended with status {result.status}: {result.metrics.get('error')}")
    return result.metrics, json.loads((run_dir / "timing.json").read_text())


def executor_rates(run_dir: Path) -> dict[str, float]:
    db = json.loads((run_dir / "artifacts" / "database.json").read_text())["path"]
    df = pl.read_parquet(run_dir / "artifacts" / "teacher_exec.parquet")
    gold = df["gold_sql"].to_list()
    pred = [s for s in df["clean_sql"].to_list() if s]
    out = {}
    with SqlExecutor(db) as ex:
        t0 = time.perf_counter()
        for s in gold:
            ex.execute_gold(s)
        out["gold_cold_qps"] = len(gold) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(10):
            for s in gold:
                ex.execute_gold(s)
        out["gold_warm_qps"] = 10 * len(gold) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in pred:
            ex.execute(s)
        out["pred_uncached_qps"] = len(pred) / (time.perf_counter() - t0)
    out["queries"] = len(gold)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=0, help="eval rows answered too (default 0: 1,000 rows in all)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="reuse a cache dir (built database)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline-overhead-") as tmp:
        cache = args.cache_dir or Path(tmp) / "cache"
        metrics, timing = run_pipeline(args.n_train, args.n_eval, Path(tmp) / "run", cache)
        rates = executor_rates(Path(tmp) / "run")
    stages = timing["stages"]
    total = timing["total_wall_s"]
    gen = metrics.get("teacher.generation_wall_s") or 0.0
    post = sum(stages[s]["wall_s"] for s in POST if s in stages)
    rows = metrics.get("teacher.total_all_splits")
    print(f"\nrows: {rows} (train {metrics.get('teacher.total')}), simulated teacher, zero latency, cache off")
    print(f"{'stage':<10}{'wall_s':>10}{'share':>8}{'items/s':>12}")
    for name, s in stages.items():
        ips = s["items_per_s"]
        print(f"{name:<10}{s['wall_s']:>10.4f}{s['share'] or 0:>8.3f}{(ips or 0):>12.0f}")
    print(f"{'total':<10}{total:>10.4f}")
    print(f"\nteacher generation (engine, excluded): {gen:.4f} s")
    print(f"overhead (run wall - generation):      {total - gen:.4f} s")
    print(f"post-processing ({' + '.join(POST)}): {post:.4f} s  (target <= 1 s for 1,000 rows)")
    print(f"executor on {rates['queries']} queries: gold cold {rates['gold_cold_qps']:.0f} q/s, "
          f"gold warm (LRU) {rates['gold_warm_qps']:.0f} q/s, predicted uncached {rates['pred_uncached_qps']:.0f} q/s")


if __name__ == "__main__":
    main()
