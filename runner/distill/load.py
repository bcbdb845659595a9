"""Stages `load` and `hash`: sample WikiSQL questions into train/eval on disjoint tables, build
their SQLite database, then key every row by its content and drop duplicate content.

`load` writes `questions` (one row per sampled question, with its rendered gold SQL),
`tables` (the tables those questions use) and `database.json` (where later stages open an
executor). `hash` writes `samples`: `sample_id` = hash of (table id, normalised question),
so the same question on the same table is one sample even under two question ids.
"""
from __future__ import annotations

import hashlib
import json
import random
import re

import polars as pl

from runner.core.stage import ConfigError, Stage, check_choice, check_range
from runner.text2sql.data import (
    SOURCES,
    Table,
    find_data_root,
    load_questions,
    load_schemas,
    load_tables,
)
from runner.text2sql.normalize import nkey
from runner.text2sql.sql import render_sql


class WikiSqlDataset:
    """The `dataset` group: where the data is and how many rows of each split to draw."""

    def __init__(self, data_dir: str | None = None, source: str = "tabfact", split: str = "train",
                 matched_only: bool = True, n_train: int = 1000, n_eval: int = 1000, seed: int = 0,
                 exec_timeout_s: float | str = "auto", exec_timeout_floor_s: float = 0.05,
                 exec_timeout_max_s: float = 1.0, exec_timeout_multiple: float = 50.0,
                 exec_max_rows: int = 1000, table_alias: str | None = "t", eval_split: str = "dev",
                 disjoint: str = "schema"):
        self.data_dir = data_dir
        self.source, self.split, self.matched_only = source, split, matched_only
        self.n_train, self.n_eval, self.seed = n_train, n_eval, seed
        self.exec_timeout_s, self.exec_max_rows = exec_timeout_s, exec_max_rows
        self.exec_timeout_floor_s, self.exec_timeout_max_s = exec_timeout_floor_s, exec_timeout_max_s
        self.exec_timeout_multiple = exec_timeout_multiple
        self.table_alias = table_alias or None
        # Two held-out sets, both kept out of training: dev (recipe choices, tuning) and test (reported
        # once per recipe). eval_split says which one this run scores as its `eval` rows.
        self.eval_split, self.disjoint = eval_split, disjoint
        self.skipped_overlap = 0  # train questions skipped because an eval question has the same text

    def validate(self) -> None:
        check_choice("dataset", "source", self.source, SOURCES)
        check_choice("dataset", "eval_split", self.eval_split, ("dev", "test"))
        check_choice("dataset", "disjoint", self.disjoint, ("schema", "table"))
        if self.n_train != "all" and (not isinstance(self.n_train, int) or self.n_train < 1):
            raise ConfigError(f"dataset.n_train={self.n_train!r} must be an integer >= 1, or all (every "
                              "question on a table that is not an eval table)")
        for key in ("exec_max_rows",):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"dataset.{key}={getattr(self, key)!r} must be an integer >= 1")
        if not isinstance(self.n_eval, int) or self.n_eval < 0:
            raise ConfigError(f"dataset.n_eval={self.n_eval!r} must be an integer >= 0 (0: no eval split)")
        if self.exec_timeout_s != "auto":
            check_range("dataset", "exec_timeout_s", self.exec_timeout_s, 0, lo_open=True)
        check_range("dataset", "exec_timeout_floor_s", self.exec_timeout_floor_s, 0, lo_open=True)
        check_range("dataset", "exec_timeout_max_s", self.exec_timeout_max_s, self.exec_timeout_floor_s)
        check_range("dataset", "exec_timeout_multiple", self.exec_timeout_multiple, 1)
        if self.table_alias is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.table_alias):
            raise ConfigError(f"dataset.table_alias={self.table_alias!r} must be a plain SQL identifier "
                              "(e.g. t), or null to show real table names")
        find_data_root(self.data_dir)  # ConfigError naming the paths tried and how to get the data

    def exec_budget(self, gold_max_s: float) -> float:
        """Per-query budget: `exec_timeout_s`, or with `auto` a multiple of the slowest gold query
        on this database, between the floor and the cap. WikiSQL answers take microseconds; a
        flat 1 s let a teacher's runaway SQL (recursive CTE, 7-way cross join) cost ~1 s a row."""
        if self.exec_timeout_s != "auto":
            return float(self.exec_timeout_s)
        return min(self.exec_timeout_max_s, max(self.exec_timeout_floor_s, self.exec_timeout_multiple * gold_max_s))

    def sample(self, questions: pl.DataFrame, schemas: dict[str, str] | None = None) -> pl.DataFrame:
        """Seeded draw of n_eval held-out + n_train train rows, sharing no table (disjoint=table) or
        no table schema (disjoint=schema: `schemas`, table_id -> signature), and no question.

        Tables are shuffled with dataset.seed and dealt to dev until it holds n_eval questions, then
        to test likewise. A dealt table's schema belongs to that set from then on: its other tables
        are never dealt to the other set nor trained on (under disjoint=table a table is its own
        schema). Train draws from tables of unowned schemas, skipping
        any question whose normalised text (nkey) is a dev or test question (two tables with the
        same columns and the same question give one identical prompt with rows_k=0). Which
        held-out set is `eval` changes nothing else: training is the same for dev and test.
        Adds `split` and, for eval rows, `schema_seen` (its schema is also a train table's)."""
        rng = random.Random(self.seed)
        counts = dict(questions.group_by("table_id").len().iter_rows())
        key = (lambda t: schemas[t]) if self.disjoint == "schema" and schemas else (lambda t: t)
        tables = sorted(counts)
        rng.shuffle(tables)
        owner: dict[str, str] = {}  # schema (or table) -> the held-out set it belongs to
        held: dict[str, set[str]] = {"dev": set(), "test": set()}
        it = iter(tables)
        for name in ("dev", "test"):
            n = 0
            while n < self.n_eval and (tid := next(it, None)) is not None:
                if owner.setdefault(key(tid), name) == name:
                    held[name].add(tid)
                    n += counts[tid]
        picked = {name: questions.filter(pl.col("table_id").is_in(sorted(tables)))
                  .sample(fraction=1.0, shuffle=True, seed=self.seed).head(self.n_eval)
                  for name, tables in held.items()}
        eval_rows = picked[self.eval_split]
        trainable = [t for t in counts if key(t) not in owner]
        train_rows = questions.filter(pl.col("table_id").is_in(trainable)) \
            .sample(fraction=1.0, shuffle=True, seed=self.seed + 1)
        train_rows = self._without_eval_questions(train_rows, pl.concat([picked["dev"], picked["test"]]))
        if eval_rows.height < self.n_eval or (self.n_train != "all" and train_rows.height < self.n_train):
            raise ConfigError(f"dataset asks for n_train={self.n_train} + 2 x n_eval={self.n_eval} rows (dev and "
                              f"test held-out sets) but the source has {questions.height} on enough distinct "
                              "tables; lower dataset.n_train / dataset.n_eval")
        seen = {schemas[t] for t in train_rows["table_id"].unique().to_list()} if schemas else set()
        eval_seen = [schemas[t] in seen for t in eval_rows["table_id"].to_list()] if schemas \
            else [None] * eval_rows.height
        return pl.concat([train_rows.with_columns(split=pl.lit("train"), schema_seen=pl.lit(None, pl.Boolean)),
                          eval_rows.with_columns(split=pl.lit("eval"),
                                                 schema_seen=pl.Series(eval_seen, dtype=pl.Boolean))])

    def _without_eval_questions(self, train: pl.DataFrame, eval_rows: pl.DataFrame) -> pl.DataFrame:
        """The first n_train train rows (in shuffled order) whose question is not an eval question."""
        held_out = {nkey(q) for q in eval_rows["question"].to_list()}
        keep, self.skipped_overlap = [], 0
        for i, q in enumerate(train["question"].to_list()):
            if self.n_train != "all" and len(keep) == self.n_train:
                break
            if nkey(q) in held_out:
                self.skipped_overlap += 1
            else:
                keep.append(i)
        return train[keep]


def tables_frame(tables: dict[str, Table]) -> pl.DataFrame:
    """Tables as a parquet-friendly frame (header/types/rows as JSON strings)."""
    ids = sorted(tables)
    return pl.DataFrame({
        "table_id": ids,
        "header": [json.dumps(tables[t].header, ensure_ascii=False) for t in ids],
        "types": [json.dumps(tables[t].types) for t in ids],
        "rows": [json.dumps(tables[t].rows, ensure_ascii=False) for t in ids],
        "page_title": [tables[t].page_title for t in ids],
    }, schema={"table_id": pl.String, "header": pl.String, "types": pl.String, "rows": pl.String,
               "page_title": pl.String})


def tables_from_frame(df: pl.DataFrame) -> dict[str, Table]:
    return {r["table_id"]: Table(r["table_id"], json.loads(r["header"]), json.loads(r["types"]),
                                 json.loads(r["rows"]), r["page_title"]) for r in df.iter_rows(named=True)}


class LoadStage(Stage):
    writes = ("questions", "tables", "database.json")

    def __init__(self, dataset: WikiSqlDataset):
        self.dataset = dataset

    def validate(self, ctx):
        self.dataset.validate()

    def notices(self) -> list[str]:
        if self.dataset.eval_split == "test":
            return ["this run scores the locked TEST split (dataset.eval_split=test): report it once per recipe and "
                    "list the run in the notes; choose settings on dev (the default), never on test"]
        return []

    def run(self, ctx):
        from runner.text2sql.database import build_database, table_schema

        ds = self.dataset
        root = find_data_root(ds.data_dir)
        pool = load_questions(root, ds.source, ds.split, ds.matched_only)
        schemas = load_schemas(root, ds.source, ds.split)
        sampled = ds.sample(pool, schemas)
        tables = load_tables(root, set(sampled["table_id"].unique().to_list()), ds.source, ds.split)
        db_path = build_database(tables, ctx.cache_dir)
        schemas = {tid: table_schema(t) for tid, t in tables.items()}
        gold, names = [], []
        for tid, sel, agg, conds in sampled.select("table_id", "sel", "agg", "conds").iter_rows():
            name, cols, types = schemas[tid]
            names.append(name)
            gold.append(render_sql(ds.table_alias or name, cols, types, sel, agg, json.loads(conds)))
        # sql_table: the real table (the executor binds the alias to it); query_table: the name the
        # prompt shows and the SQL uses.
        sampled = sampled.with_columns(sql_table=pl.Series(names, dtype=pl.String),
                                       query_table=pl.Series([ds.table_alias or n for n in names], dtype=pl.String),
                                       gold_sql=pl.Series(gold, dtype=pl.String))
        gold_max_s, gold_failed = time_gold(db_path, sampled, ds)
        budget = ds.exec_budget(gold_max_s)
        ctx.store.write("questions", sampled)
        ctx.store.write("tables", tables_frame(tables))
        ctx.store.write_json("database.json", {
            "path": str(db_path), "tables": len(tables), "source": ds.source, "split": ds.split,
            "timeout_s": budget, "max_rows": ds.exec_max_rows, "table_alias": ds.table_alias})
        ctx.metrics.update("load", {"gold_max_exec_s": round(gold_max_s, 6), "exec_timeout_s": round(budget, 6),
                                    "gold_exec_failed": gold_failed})
        ctx.timer.add_items(sampled.height)
        ctx.metrics.update("load", {
            "pool": pool.height, "train": int((sampled["split"] == "train").sum()),
            "eval": int((sampled["split"] == "eval").sum()), "tables": len(tables),
            "skipped_overlap": ds.skipped_overlap,
            "source": ds.source, "seed": ds.seed, "eval_split": ds.eval_split, "disjoint": ds.disjoint,
            # share of eval rows whose table schema is also a train table's: 0 under disjoint=schema
            "eval_schema_seen_rate": float(sampled.filter(pl.col("split") == "eval")["schema_seen"].mean())
            if (sampled["split"] == "eval").any() else None})
        ctx.log.info("load: %d questions (%d tables) from %s, database %s", sampled.height, len(tables),
                     root, db_path)


def time_gold(db_path, sampled: pl.DataFrame, ds: WikiSqlDataset) -> tuple[float, int]:
    """(slowest gold query in seconds, gold queries that fail) on the built database, each run
    once under the cap: the measure the `auto` budget is a multiple of."""
    from runner.text2sql.executor import SqlExecutor

    slowest, failed = 0.0, 0
    cap = ds.exec_timeout_max_s if ds.exec_timeout_s == "auto" else float(ds.exec_timeout_s)
    with SqlExecutor(db_path, timeout_s=cap, max_rows=ds.exec_max_rows, table_alias=ds.table_alias) as ex:
        for sql, table in sampled.select("gold_sql", "sql_table").iter_rows():
            r = ex.execute(sql, table)
            slowest = max(slowest, r.elapsed_s)
            failed += not r.ok
    return slowest, failed


def content_id(table_id: str, question: str) -> str:
    """Canonical content key: the table and the question under nkey (case, spaces, punctuation)."""
    return hashlib.sha256(f"{table_id}\x1f{nkey(question)}".encode()).hexdigest()[:16]


class HashStage(Stage):
    reads = ("questions",)
    writes = ("samples",)

    def run(self, ctx):
        df = ctx.store.read("questions")
        ids = [content_id(t, q) for t, q in df.select("table_id", "question").iter_rows()]
        df = df.with_columns(sample_id=pl.Series(ids, dtype=pl.String))
        out = df.unique(subset="sample_id", keep="first", maintain_order=True)
        dups = df.height - out.height
        ctx.store.write("samples", out.select("sample_id", *[c for c in out.columns if c != "sample_id"]))
        ctx.timer.add_items(df.height)
        ctx.metrics.update("hash", {"total": df.height, "duplicates": dups, "unique": out.height})
        if dups:
            ctx.log.info("hash: removed %d duplicate question(s) (same table, same normalised text)", dups)
