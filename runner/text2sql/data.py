"""WikiSQL questions and tables from disk: the rebuilt TabFact set and the official layout.

Two sources share one output shape:
- "tabfact": `<root>/wikisql/train_tabfact[.matched].jsonl` + `train_tabfact.tables.jsonl`
  (real WikiSQL train questions on TabFact copies of their tables; see the data README).
- "official": `<split>.jsonl` + `<split>.tables.jsonl` as in salesforce/WikiSQL's
  `data.tar.bz2`, either directly under `<root>/wikisql/` or under `<root>/wikisql/data/`
  (where `python -m runner.data wikisql` unpacks it). The official `<split>.db` is not
  needed: its columns are `col0..colN` without header names, so the database is always
  rebuilt from `<split>.tables.jsonl` (runner.text2sql.database).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from runner.core.stage import ConfigError

SOURCES = ("tabfact", "official")
ENV_VAR = "RUNNER_DATA_DIR"
# The data ships beside the clone (<repo>/../shared/data). Resolved from this file, not the cwd, so
# `python -m runner` finds it from any folder, with or without the Makefile (which exports the same).
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

QUESTION_SCHEMA = {
    "question_id": pl.String, "table_id": pl.String, "question": pl.String, "sel": pl.Int64,
    "agg": pl.Int64, "conds": pl.String, "gold_result": pl.String, "sql_from": pl.String,
}


@dataclass
class Table:
    id: str
    header: list[str]
    types: list[str]
    rows: list[list]
    page_title: str | None = None


_HOW_TO_GET = (
    f"Either set ${ENV_VAR} (or dataset.data_dir) to a folder that contains wikisql/, "
    "or download the official archive with `python -m runner.data wikisql --dest DIR` "
    f"and point ${ENV_VAR} / dataset.data_dir at DIR."
)


def find_data_root(configured: str | None) -> Path:
    """The folder holding `wikisql/`: the configured value, else $RUNNER_DATA_DIR, else
    <repo>/../shared/data when that exists.

    A path that names the `wikisql/` folder itself is accepted too (its parent is returned).
    A configured value that does not hold the data is an error, never silently replaced.
    """
    if configured:
        candidates = [("dataset.data_dir", configured)]
    elif os.environ.get(ENV_VAR):
        candidates = [(f"${ENV_VAR}", os.environ[ENV_VAR])]
    elif SHARED_DATA.is_dir():
        candidates = [("the default beside the repo", str(SHARED_DATA))]
    else:
        raise ConfigError(f"No WikiSQL data folder configured: dataset.data_dir is empty and "
                          f"${ENV_VAR} is not set (and there is no {SHARED_DATA}). {_HOW_TO_GET}")
    tried = []
    for origin, raw in candidates:
        root = Path(os.path.expandvars(os.path.expanduser(str(raw)))).resolve()
        if (root / "wikisql").is_dir():
            return root
        if root.name == "wikisql" and root.is_dir():
            return root.parent
        tried.append(f"{root / 'wikisql'} (from {origin})")
    raise ConfigError(f"WikiSQL data not found; tried: {', '.join(tried)}. {_HOW_TO_GET}")


def _official_file(root: Path, name: str) -> Path | None:
    for folder in (root / "wikisql", root / "wikisql" / "data"):
        if (folder / name).is_file():
            return folder / name
    return None


def questions_path(root: Path, source: str, split: str, matched_only: bool = True) -> Path:
    if source == "tabfact":
        if split != "train":
            raise ConfigError(f"dataset split {split!r} does not exist for source 'tabfact': TabFact "
                              "only has WikiSQL train tables; use split=train or source=official")
        name = "train_tabfact.matched.jsonl" if matched_only else "train_tabfact.jsonl"
        path = root / "wikisql" / name
        if not path.is_file():
            raise ConfigError(f"{path} not found. {_HOW_TO_GET}")
        return path
    if source == "official":
        path = _official_file(root, f"{split}.jsonl")
        if path is None:
            raise ConfigError(
                f"official WikiSQL file {split}.jsonl not found; tried {root / 'wikisql' / f'{split}.jsonl'} "
                f"and {root / 'wikisql' / 'data' / f'{split}.jsonl'}. {_HOW_TO_GET}")
        return path
    raise ConfigError(f"dataset source {source!r} is not one of {list(SOURCES)}")


def tables_path(root: Path, source: str, split: str) -> Path:
    if source == "tabfact":
        path = root / "wikisql" / "train_tabfact.tables.jsonl"
        if not path.is_file():
            raise ConfigError(f"{path} not found. {_HOW_TO_GET}")
        return path
    if source == "official":
        path = _official_file(root, f"{split}.tables.jsonl")
        if path is None:
            raise ConfigError(
                f"official WikiSQL tables file {split}.tables.jsonl not found under {root / 'wikisql'} "
                f"or {root / 'wikisql' / 'data'}: without it the {split} questions cannot be executed "
                f"(the shared copy has no dev/test tables; use source=tabfact). {_HOW_TO_GET}")
        return path
    raise ConfigError(f"dataset source {source!r} is not one of {list(SOURCES)}")


def load_questions(root: Path, source: str = "tabfact", split: str = "train",
                   matched_only: bool = True) -> pl.DataFrame:
    """One row per question; `conds` and `gold_result` are JSON strings (nested, mixed types).

    `question_id` is `<source>-<split>[-matched]-<line number from 1>`: stable for a file.
    """
    path = questions_path(Path(root), source, split, matched_only)
    prefix = f"{source}-{split}" + ("-matched" if source == "tabfact" and matched_only else "")
    cols: dict[str, list] = {k: [] for k in QUESTION_SCHEMA}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                sql = q["sql"]
                row = (f"{prefix}-{lineno}", str(q["table_id"]), q["question"], int(sql["sel"]),
                       int(sql["agg"]), json.dumps(sql.get("conds") or [], ensure_ascii=False),
                       json.dumps(q["gold_result"], ensure_ascii=False) if "gold_result" in q else None,
                       q.get("sql_from"))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a WikiSQL question record ({e!r})") from e
            for key, value in zip(QUESTION_SCHEMA, row):
                cols[key].append(value)
    return pl.DataFrame(cols, schema=QUESTION_SCHEMA)


def _line_table_id(line: str) -> str | None:
    # Both writers put "id" first; peeking at it skips json.loads for the ~15k tables not needed.
    for head in ('{"id":"', '{"id": "'):
        if line.startswith(head):
            end = line.find('"', len(head))
            return line[len(head):end] if end > 0 else None
    return None


def schema_signature(header: list[str], types: list[str]) -> str:
    """What a model sees of a table with `rows_k: 0`: its normalised column names and types.
    WikiSQL has many tables with the same schema (16,026 tables, 6,581 schemas in the shipped set)."""
    from runner.text2sql.normalize import nkey

    return json.dumps([[nkey(h) for h in header], list(types)], ensure_ascii=False)


def load_schemas(root: Path, source: str = "tabfact", split: str = "train") -> dict[str, str]:
    """table_id -> schema_signature for every table of the source (header and types only: the
    record is cut before its rows when the writer put them last, as both writers do)."""
    out: dict[str, str] = {}
    with open(tables_path(Path(root), source, split), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            cut = line.find(',"rows":')
            try:
                rec = json.loads(line[:cut] + "}") if cut > 0 else json.loads(line)
            except ValueError:
                rec = json.loads(line)
            out[str(rec["id"])] = schema_signature(rec["header"], rec["types"])
    return out


def load_tables(root: Path, table_ids: set[str], source: str = "tabfact",
                split: str = "train") -> dict[str, Table]:
    """The tables named in `table_ids` (only those are parsed); missing ones are an error."""
    path = tables_path(Path(root), source, split)
    wanted = set(table_ids)
    tables: dict[str, Table] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            peek = _line_table_id(line)
            if peek is not None and peek not in wanted:
                continue
            if not line.strip():
                continue
            rec = json.loads(line)
            tid = str(rec.get("id"))
            if tid not in wanted:
                continue
            header, types = list(rec["header"]), list(rec["types"])
            if len(header) != len(types) or any(t not in ("text", "real") for t in types):
                raise ValueError(f"{path}:{lineno}: table {tid} has {len(header)} header names and "
                                 f"types {types}; expected one 'text'/'real' type per column")
            tables[tid] = Table(id=tid, header=header, types=types, rows=rec.get("rows") or [],
                                page_title=rec.get("page_title"))
    missing = wanted - tables.keys()
    if missing:
        sample = ", ".join(sorted(missing)[:5])
        raise ValueError(f"{len(missing)} table(s) needed by the questions are not in {path} "
                         f"(e.g. {sample}); the questions and tables files do not belong together")
    return tables
