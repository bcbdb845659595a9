"""Measure the simulated teacher's quality with the real cleaner, executor and scorer.

The defaults in conf/provider/simulated.yaml are calibrated with this script to roughly the
published teacher (exec pass ~0.93, gold match ~0.45). Prints exec pass and gold match over
N questions of the executable WikiSQL substitute (train_tabfact.matched).

    python bench/simulated_teacher_quality.py --n 2000 --sample-seed 1 [--set wrong_agg_rate=0.3 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import polars as pl
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner.engine import Request, generate
from runner.text2sql.data import load_questions, load_tables
from runner.text2sql.database import build_database, table_schema
from runner.text2sql.executor import SqlExecutor
from runner.text2sql.scoring import score_predictions
from runner.text2sql.sql import render_sql

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sample-seed", type=int, default=1)
    ap.add_argument("--sim-seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="provider overrides, e.g. wrong_agg_rate=0.3")
    args = ap.parse_args()

    root = Path(os.environ.get("RUNNER_DATA_DIR", REPO.parent / "shared" / "data"))
    questions = load_questions(root, "tabfact", "train").sample(n=args.n, seed=args.sample_seed)
    tables = load_tables(root, set(questions["table_id"].to_list()))
    workdir = Path(tempfile.mkdtemp(prefix="simq-"))
    db = build_database(tables, workdir)

    requests, gold = [], []
    for q in questions.to_dicts():
        name, cols, types = table_schema(tables[q["table_id"]])
        conds = json.loads(q["conds"])
        gold_sql = render_sql(name, cols, types, q["sel"], q["agg"], conds)
        gold.append(gold_sql)
        requests.append(Request(id=q["question_id"],
                                messages=[{"role": "user", "content": f"{q['table_id']}: {q['question']}"}],
                                meta={"task": "text2sql", "table": name, "columns": cols, "types": types,
                                      "sel": q["sel"], "agg": q["agg"], "conds": conds, "gold_sql": gold_sql}))

    cfg = OmegaConf.load(REPO / "conf" / "provider" / "simulated.yaml")
    cfg.merge_with({"sim_seed": args.sim_seed, "cache": False, "latency_median_s": 0.0, "latency_p95_s": 0.0,
                    "rate_429": 0.0, "rate_5xx": 0.0, "rate_timeout": 0.0})
    cfg.merge_with(OmegaConf.from_dotlist(args.set))
    provider = instantiate(cfg)
    result = generate(provider, requests, cache_dir=workdir, progress=False)

    df = pl.DataFrame({"sample_id": [r.id for r in requests], "gold_sql": gold,
                       "text": [r.text for r in result.responses]})
    with SqlExecutor(db) as ex:
        scored = score_predictions(df, ex)
    print(f"simulated teacher on {args.n} questions (sample seed {args.sample_seed}, sim_seed {args.sim_seed}): "
          f"exec_pass={scored['exec_pass'].mean():.3f} gold_match={scored['gold_match'].mean():.3f}")


if __name__ == "__main__":
    main()
