"""A tiny synthetic Text2SQL task for tests: one small table, two question shapes, exact gold SQL.

Small enough that a ~100k-parameter model learns it in a few dozen steps on CPU, so tests can
check that training really lowers the loss (and raises accuracy) without any real data.
"""
from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

SYSTEM = "Return only the SQL query."
NAMES = ["ann", "bob", "cid", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lea"]
CITIES = ["oslo", "rome", "lima", "kiev", "bern", "doha"]
SCHEMA = 'CREATE TABLE t ("name" text, "city" text, "age" real);'


def toy_table(seed: int = 0) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    return [(n, rng.choice(CITIES), rng.randint(18, 80)) for n in NAMES]


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` chat rows {"messages": [system, user, assistant], "gold_sql": ...} over the toy table."""
    rng = random.Random(seed + 1)
    rows = []
    for _ in range(n):
        name, col = rng.choice(NAMES), rng.choice(["city", "age"])
        question = f"What is the {col} of {name}?"
        sql = f"SELECT \"{col}\" FROM t WHERE \"name\" = '{name}'"
        rows.append({"messages": [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"{SCHEMA}\nQuestion: {question}"},
                                  {"role": "assistant", "content": sql}],
                     "gold_sql": sql})
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_database(path: Path, seed: int = 0) -> Path:
    """The toy table as a SQLite file, for executing predicted and gold SQL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE IF EXISTS t")
        con.execute(SCHEMA)
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", toy_table(seed))
    return path
