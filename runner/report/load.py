"""Find job folders and load their metrics.json, timing.json and .hydra/overrides.yaml with DuckDB.

A job folder is any folder holding a metrics.json (a single run, or one job of a sweep).
Hydra writes the overrides as a YAML list, which DuckDB cannot parse, so Python turns each
`key=value` line into a row and DuckDB joins it with the JSON files it reads itself.
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

# Run metadata in metrics.json that is not a quality or cost figure (never a default metric column).
META_PREFIXES = ("version.", "run.git_commit", "run.host", "run.platform", "run.started_at", "run.ended_at")
META_KEYS = ("status", "error", "failed_stage", "experiment", "seed")


@dataclass
class Runs:
    """The loaded jobs: a DuckDB view `runs` (one row per job: `job`, every metrics.json key, every
    override key, `total_wall_s`) plus the stage timings as rows for the breakdown plot."""
    con: duckdb.DuckDBPyConnection
    jobs: list[Path]
    metric_columns: list[str]                # metrics.json keys in first-seen order
    swept: list[str]                         # override keys that differ between jobs (all keys for one job)
    fixed: dict[str, Any]                    # override keys with one value across all jobs
    stages: list[dict[str, Any]] = field(default_factory=list)  # job, stage, wall_s, share, items

    def query(self, columns: list[str], where: str | None = None,
              sort: str | None = None) -> list[dict[str, Any]]:
        """Rows of `runs` with the given columns; `where`/`sort` are DuckDB SQL (quote dotted
        names: "summary.mean_x" > 3). Default order: job order."""
        cols = ", ".join(_q(c) for c in ["job", *columns])
        sql = f"SELECT {cols} FROM runs"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {sort}, job_order" if sort else " ORDER BY job_order"
        try:
            return _rows(self.con.sql(sql))
        except duckdb.Error as e:
            raise ValueError(f"cannot query the runs ({e}).\nColumns: {', '.join(self.all_columns())}. "
                             "Quote names with dots in --where/--sort, e.g. '\"summary.mean_x\" > 3'") from e

    def all_columns(self) -> list[str]:
        return [c for c in self.con.sql("SELECT * FROM runs LIMIT 0").columns if c != "job_order"]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def find_job_dirs(paths: list[str | Path]) -> list[Path]:
    """Each path is a run folder, a sweep folder (searched recursively) or a glob of either."""
    found: list[Path] = []
    for raw in paths:
        matches = sorted(glob.glob(str(raw), recursive=True)) or [str(raw)]
        for m in matches:
            p = Path(m)
            if p.is_file() and p.name == "metrics.json":
                p = p.parent
            if not p.exists():
                raise FileNotFoundError(f"{raw}: no such run or sweep folder")
            if p.is_file():  # a glob also matches files next to the jobs (multirun.yaml, reports)
                continue
            if (p / "metrics.json").exists():
                found.append(p.resolve())
            else:
                found.extend(f.parent.resolve() for f in p.rglob("metrics.json"))
    jobs = sorted(set(found), key=_job_sort_key)
    if not jobs:
        raise FileNotFoundError(f"no metrics.json under {', '.join(map(str, paths))} "
                                "(pass a run folder, a sweep folder, or a glob of them)")
    return jobs


def _job_sort_key(p: Path) -> tuple:
    # Hydra names sweep jobs 0, 1, ..., 10: sort those numerically.
    return (str(p.parent), int(p.name) if p.name.isdigit() else 10**9, p.name)


def parse_value(text: str) -> Any:
    """Override values arrive as strings; give numbers their type so they sort and plot as numbers."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return loaded if isinstance(loaded, (bool, int, float)) else text


def read_overrides(job: Path) -> dict[str, Any]:
    """`.hydra/overrides.yaml` (a list of `key=value`) -> {key: value}; `+`/`++` prefixes dropped."""
    f = job / ".hydra" / "overrides.yaml"
    if not f.exists():
        return {}
    out: dict[str, Any] = {}
    for line in yaml.safe_load(f.read_text()) or []:
        key, sep, value = str(line).partition("=")
        if not sep:  # `~key` deletions carry no value
            out[key] = "(deleted)"
            continue
        out[key.lstrip("+")] = parse_value(value)
    return out


def _rows(rel: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
    cols = [d[0] for d in rel.description]
    return [dict(zip(cols, r)) for r in rel.fetchall()]


def _sql_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOLEAN"
    if any(isinstance(v, bool) for v in present):  # mixed with bools: keep as written
        return "VARCHAR"
    if present and all(isinstance(v, int) for v in present):
        return "BIGINT"
    if present and all(isinstance(v, (int, float)) for v in present):
        return "DOUBLE"
    return "VARCHAR"


def load_runs(jobs: list[Path]) -> Runs:
    con = duckdb.connect()
    con.execute("CREATE TABLE job_list (job VARCHAR, job_order INTEGER)")
    con.executemany("INSERT INTO job_list VALUES (?, ?)", [[str(j), i] for i, j in enumerate(jobs)])
    # One row per metrics.json; union_by_name keeps keys only some jobs have (error, failed_stage).
    # The impossible date formats keep timestamps as the strings metrics.json holds (DuckDB would
    # otherwise detect TIMESTAMPTZ, whose Python conversion needs pytz).
    con.execute("CREATE TABLE metrics AS SELECT regexp_replace(filename, '/metrics\\.json$', '') AS job, "
                "* EXCLUDE (filename) FROM read_json_auto(?, union_by_name=true, filename=true, "
                "sample_size=-1, dateformat='%d!%m', timestampformat='%d!%m!')",
                [[str(j / "metrics.json") for j in jobs]])
    metric_columns = [c for c in con.sql("SELECT * FROM metrics LIMIT 0").columns if c != "job"]

    timing_files = [str(j / "timing.json") for j in jobs if (j / "timing.json").exists()]
    stages: list[dict[str, Any]] = []
    con.execute("CREATE TABLE timing (job VARCHAR, total_wall_s DOUBLE)")
    if timing_files:
        # Stage names are JSON object keys, different per pipeline: unnest them with json_keys.
        q = """
            WITH t AS (SELECT regexp_replace(filename, '/timing\\.json$', '') AS job, content FROM read_text(?)),
                 s AS (SELECT job, content, unnest(json_keys(content, '$.stages')) AS stage FROM t)
            SELECT job, stage,
                   CAST(json_extract(content, '$.stages."' || stage || '".wall_s') AS DOUBLE) AS wall_s,
                   CAST(json_extract(content, '$.stages."' || stage || '".share') AS DOUBLE) AS share,
                   CAST(json_extract(content, '$.stages."' || stage || '".items') AS BIGINT) AS items
            FROM s"""
        stages = _rows(con.sql(q, params=[timing_files]))
        con.execute("INSERT INTO timing SELECT regexp_replace(filename, '/timing\\.json$', ''), "
                    "CAST(json_extract(content, '$.total_wall_s') AS DOUBLE) FROM read_text(?)", [timing_files])

    params = [read_overrides(j) for j in jobs]
    keys: list[str] = []
    for p in params:
        keys.extend(k for k in p if k not in keys)
    if len(jobs) == 1:
        swept, fixed = keys, {}
    else:
        # A key absent from a job still counts as a difference (the job used the config default).
        swept = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in params}) > 1]
        fixed = {k: params[0][k] for k in keys if k not in swept}
    # Override columns; a key that is also a metric (e.g. seed) keeps the metric's value.
    param_keys = [k for k in keys if k not in metric_columns]
    types = {k: _sql_type([p.get(k) for p in params]) for k in param_keys}
    con.execute("CREATE TABLE params (job VARCHAR" + "".join(f", {_q(k)} {types[k]}" for k in param_keys) + ")")
    con.executemany(f"INSERT INTO params VALUES ({', '.join('?' * (len(param_keys) + 1))})",
                    [[str(j), *[_as(types[k], p.get(k)) for k in param_keys]] for j, p in zip(jobs, params)])
    con.execute("CREATE VIEW runs AS SELECT j.job_order, m.*, p.* EXCLUDE (job), t.total_wall_s "
                "FROM job_list j JOIN metrics m USING (job) LEFT JOIN params p USING (job) "
                "LEFT JOIN timing t USING (job)")
    return Runs(con=con, jobs=jobs, metric_columns=metric_columns, swept=swept, fixed=fixed, stages=stages)


def _as(sql_type: str, value: Any) -> Any:
    if value is None or sql_type != "VARCHAR":
        return value
    return str(value).lower() if isinstance(value, bool) else str(value)


def default_metrics(runs: Runs) -> list[str]:
    """Every metric except run metadata, the identity columns shown anyway and the `<key>_ci95`
    intervals (runner.core.stats; pick them with --metrics '*_ci95')."""
    return [c for c in runs.metric_columns
            if not c.startswith(META_PREFIXES) and c not in META_KEYS and not c.endswith("_ci95")]
