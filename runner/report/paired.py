"""`runner.report --baseline A B ...`: every other run against run A, row by row on the eval rows.

Two runs scored on the same eval rows are compared per row (runner.core.stats.paired_compare): the
difference B - A of each rate, its 95 % paired-bootstrap interval and the exact McNemar p-value.
Two Wilson intervals that overlap say nothing here (docs: /work/shared/notes/statistics.md).

Eval sets of a run folder (artifacts/*.parquet keyed by `sample_id`, with `gold_match` and
`exec_pass` per row), named like their metrics.json scope:
- `teacher_eval`: the eval split of the teacher's answers (artifact `teacher`, else
  `teacher_judged` / `teacher_exec`: the same rows and scores, written by earlier stages);
- any other table with those columns and eval rows, by its name: `student_pre`, `student_post`,
  `student_post_plain`, `kd_teacher_eval`, ... Train-only tables (distilled, teacher_pilot) hold
  no eval row and are left out; a table with a `split` column counts its eval rows only.
Artifacts a run reuses (`pipeline.reuse_from`) are read from the run they came from, as the
runner reads them. A null score counts as a failure, as in metrics.json (runner.text2sql.quality).

A run whose rows (sample_ids) for an eval set differ from A's is not compared on it: it is named
with how many rows are only in A and only in it, and the command exits 1.
"""
from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.core.stats import fmt_ci, paired_compare

SCORES = (("gold_match", "gold_match_rate"), ("exec_pass", "exec_pass_rate"))  # column, metric name
TEACHER_SOURCES = ("teacher", "teacher_judged", "teacher_exec")  # first present = `teacher_eval`
NOT_EVAL = ("teacher_filtered", "teacher_pilot", "distilled")   # copies of the teacher, or train rows


@dataclass
class Paired:
    job: str            # the compared run (relative to the report folder)
    metric: str         # <eval set>.<rate>, e.g. student_post.gold_match_rate
    n: int
    baseline: float
    value: float
    diff: float         # value - baseline
    lo: float
    hi: float
    p_mcnemar: float | None
    baseline_only: int | None  # rows the baseline gets right and this run wrong
    run_only: int | None       # rows this run gets right and the baseline wrong


@dataclass
class Mismatch:
    job: str
    eval_set: str
    only_baseline: int
    only_run: int

    def __str__(self) -> str:
        return (f"{self.job}: {self.eval_set} holds other eval rows than the baseline "
                f"({self.only_baseline} only in the baseline, {self.only_run} only in this run); not compared")


@dataclass
class Comparison:
    baseline: str
    rows: list[Paired]
    mismatches: list[Mismatch]
    notes: list[str]    # runs sharing no eval set with the baseline


def _artifact_dirs(job: Path) -> list[Path]:
    """The run's artifacts, then those of the runs it reuses (as runner.core.artifacts reads them)."""
    dirs = [job / "artifacts"]
    cfg = job / ".hydra" / "config.yaml"
    if cfg.exists():
        reuse = ((yaml.safe_load(cfg.read_text()) or {}).get("pipeline") or {}).get("reuse_from") or []
        dirs += [Path(p) / "artifacts" for p in reuse]
    return [d for d in dirs if d.is_dir()]


def eval_sets(job: Path) -> dict[str, pl.DataFrame]:
    """{eval set name: frame of sample_id, gold_match, exec_pass (bool, null -> False)} of one run."""
    files: dict[str, Path] = {}
    for d in reversed(_artifact_dirs(job)):  # this run's own files win over reused ones
        files.update({f.stem: f for f in d.glob("*.parquet")})
    teacher = next((n for n in TEACHER_SOURCES if n in files), None)
    written = sorted(files, key=lambda n: files[n].stat().st_mtime)  # pipeline order: student_pre first
    names = {n: n for n in written if not n.startswith("teacher") and n not in NOT_EVAL}
    if teacher:
        names = {"teacher_eval": teacher, **names}
    out: dict[str, pl.DataFrame] = {}
    for name, stem in names.items():
        schema = pl.read_parquet_schema(files[stem])
        if "sample_id" not in schema or any(col not in schema for col, _ in SCORES):
            continue
        cols = ["sample_id", *(c for c, _ in SCORES), *(["split"] if "split" in schema else [])]
        df = pl.read_parquet(files[stem], columns=cols)
        if "split" in df.columns:
            df = df.filter(pl.col("split") == "eval").drop("split")
        if df.height == 0:
            continue
        if df["sample_id"].n_unique() != df.height:
            raise ValueError(f"{files[stem]}: sample_id repeats; rows cannot be paired")
        out[name] = df.with_columns(pl.col(c).fill_null(False).cast(pl.Boolean) for c, _ in SCORES)
    return out


def compare_runs(baseline: Path, others: list[Path], rel_to: Path, n_boot: int = 2000,
                 seed: int = 0) -> Comparison:
    def rel(p: Path) -> str:
        return os.path.relpath(p, rel_to) if p != rel_to else "."

    base = eval_sets(baseline)
    if not base:
        raise ValueError(f"--baseline {baseline}: no eval rows found (artifacts/*.parquet with sample_id, "
                         "gold_match and exec_pass)")
    rows, mismatches, notes = [], [], []
    for job in others:
        sets = eval_sets(job)
        shared = [n for n in base if n in sets]
        if not shared:
            notes.append(f"{rel(job)}: shares no eval set with the baseline (baseline: {', '.join(base)}; "
                         f"this run: {', '.join(sets) or 'none'})")
        for name in shared:
            a, b = base[name], sets[name]
            ids_a, ids_b = set(a["sample_id"].to_list()), set(b["sample_id"].to_list())
            if ids_a != ids_b:
                mismatches.append(Mismatch(rel(job), name, len(ids_a - ids_b), len(ids_b - ids_a)))
                continue
            # Row by row; sorted by sample_id so the bootstrap does not depend on artifact row order.
            joined = a.join(b, on="sample_id", suffix="_b").sort("sample_id")
            for col, metric in SCORES:
                r = paired_compare(joined[col].to_numpy(), joined[f"{col}_b"].to_numpy(), n_boot=n_boot, seed=seed)
                rows.append(Paired(rel(job), f"{name}.{metric}", r["n"], r["a_mean"], r["b_mean"], r["diff"],
                                   r["lo"], r["hi"], r["p_mcnemar"], r["a_only"], r["b_only"]))
    return Comparison(rel(baseline), rows, mismatches, notes)


HEADER = ["job", "metric", "n", "baseline", "value", "diff", "diff_lo", "diff_hi", "p_mcnemar",
          "baseline_only", "run_only"]


def write_csv(cmp: Comparison, out_dir: Path) -> Path:
    path = out_dir / "report_paired.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for r in cmp.rows:
            d = asdict(r)
            w.writerow([d[k] for k in ("job", "metric", "n", "baseline", "value", "diff", "lo", "hi", "p_mcnemar",
                                       "baseline_only", "run_only")])
    return path


def _p(p: float | None) -> str:
    return "" if p is None else f"{p:.3g}"


FOOTNOTE = ("diff = run - baseline on the same rows, 95 % paired-bootstrap interval (2,000 resamples, seed 0); "
            "p: exact McNemar on the discordant rows (baseline only / run only). An interval that holds 0 "
            "means no difference detected at this n, not no difference. With few discordant rows (under ~20) "
            "the bootstrap interval is too narrow (it never resamples outcomes it has not seen): trust the "
            "exact p there.")


def markdown(cmp: Comparison) -> list[str]:
    lines = ["", f"## Paired against the baseline `{cmp.baseline}`"]
    if cmp.rows:
        lines += ["", FOOTNOTE, "", "| job | metric | n | baseline | run | diff [95% CI] | McNemar p | "
                  "baseline only / run only |", "|---|---|---|---|---|---|---|---|"]
    for r in cmp.rows:
        lines.append(f"| {r.job} | {r.metric} | {r.n} | {r.baseline:.3f} | {r.value:.3f} | "
                     f"{fmt_ci(r.diff, r.lo, r.hi)} | {_p(r.p_mcnemar)} | {r.baseline_only} / {r.run_only} |")
    lines += [""] + [f"- **rows differ**: {m}" for m in cmp.mismatches] + [f"- {n}" for n in cmp.notes]
    return lines


def print_comparison(cmp: Comparison, console: Console) -> None:
    t = Table(title=Text(f"paired against the baseline {cmp.baseline}"), caption=Text(FOOTNOTE))
    for c in ("job", "metric", "n", "baseline", "run", "diff [95% CI]", "McNemar p", "base only / run only"):
        t.add_column(Text(c), justify="left" if c in ("job", "metric") else "right")
    for r in cmp.rows:
        significant = r.p_mcnemar is not None and r.p_mcnemar < 0.05
        t.add_row(Text(r.job), Text(r.metric), str(r.n), f"{r.baseline:.3f}", f"{r.value:.3f}",
                  Text(fmt_ci(r.diff, r.lo, r.hi), style="bold" if significant else ""), _p(r.p_mcnemar),
                  f"{r.baseline_only} / {r.run_only}")
    if cmp.rows:
        console.print(t)
    for m in cmp.mismatches:
        console.print(Text(f"rows differ: {m}", style="red"))
    for n in cmp.notes:
        console.print(Text(n, style="yellow"))
