"""A minimal Text2SQL run folder for the student evaluation/comparison tests: a SQLite table,
prompts (train + eval split), train/valid JSONL, distilled rows and a teacher table."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl

from runner.core.context import RunContext

SYSTEM = "Return only the SQL query."
PEOPLE = [("ann", "oslo", 31), ("bob", "rome", 45), ("cid", "lima", 27), ("dan", "oslo", 52),
          ("eve", "bern", 38), ("fay", "rome", 29)]


def gold_sql(name: str, col: str = "city") -> str:
    return f'SELECT "{col}" FROM t WHERE "name" = \'{name}\''


def make_run(tmp_path: Path) -> RunContext:
    ctx = RunContext.create(tmp_path / "run", cache_dir=tmp_path / "cache")
    db = tmp_path / "toy.sqlite"
    con = sqlite3.connect(db)
    con.execute('CREATE TABLE t ("name" text, "city" text, "age" real)')
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", PEOPLE)
    con.commit()
    con.close()
    ctx.store.write_json("database.json", {"path": str(db), "timeout_s": 1.0, "max_rows": 1000})
    rows = []
    for i, (name, _, _) in enumerate(PEOPLE):
        for col in ("city", "age"):
            split = "eval" if name in ("dan", "eve", "fay") else "train"
            rows.append({"sample_id": f"{split}-{name}-{col}", "split": split, "table_id": "t",
                         "question": f"What is the {col} of {name}?", "system": SYSTEM,
                         "user": f'CREATE TABLE t ("name" text, "city" text, "age" real)\n'
                                 f"Question: What is the {col} of {name}?",
                         "gold_sql": gold_sql(name, col), "prompt_tokens": 20})
    prompts = pl.DataFrame(rows)
    ctx.store.write("prompts", prompts)
    train = prompts.filter(pl.col("split") == "train")
    ctx.store.write("distilled", train.with_columns(clean_sql=pl.col("gold_sql")))
    lines = [json.dumps({"messages": [{"role": "system", "content": r["system"]},
                                      {"role": "user", "content": r["user"]},
                                      {"role": "assistant", "content": r["gold_sql"]}]}) for r in train.to_dicts()]
    ctx.store.write_text("train.jsonl", "\n".join(lines[:-1]) + "\n")
    ctx.store.write_text("valid.jsonl", lines[-1] + "\n")
    return ctx
