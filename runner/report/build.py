"""Assemble a report: pick columns, query the runs, print the rich table, write CSV/Markdown/PNGs."""
from __future__ import annotations

import csv
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.core.console import format_value
from runner.report import defaults, paired, plots, pooled, seeds
from runner.report.load import Runs, default_metrics, find_job_dirs, load_runs

MAX_PARAM_PLOTS = 24  # metric-vs-parameter PNGs per report; more are noise (pick with --metrics)


@dataclass
class Report:
    out_dir: Path
    columns: list[str]                 # job, status, swept params, metrics, error (what the table shows)
    rows: list[dict[str, Any]]
    runs: Runs
    files: list[Path] = field(default_factory=list)
    seed_keys: list[str] = field(default_factory=list)   # the setting columns of `seeds`
    seeds: list[dict[str, Any]] = field(default_factory=list)  # runner.report.seeds.seed_table
    pooled: list[dict[str, Any]] = field(default_factory=list)  # runner.report.pooled.pooled_pairs
    comparison: paired.Comparison | None = None         # --baseline: runner.report.paired


def _pick(patterns: list[str], available: list[str]) -> list[str]:
    """Names or fnmatch globs (teacher.*) -> existing columns, in the order asked."""
    out: list[str] = []
    for pat in patterns:
        hits = [c for c in available if fnmatch.fnmatchcase(c, pat)] if any(ch in pat for ch in "*?[") else \
            ([pat] if pat in available else [])
        if not hits:
            raise ValueError(f"--metrics {pat!r} matches no column; columns: {', '.join(available)}")
        out.extend(h for h in hits if h not in out)
    return out


def _optimized_metric(job: Path) -> str | None:
    f = job / ".hydra" / "config.yaml"
    if not f.exists():
        return None
    return (yaml.safe_load(f.read_text()) or {}).get("optimized_metric")


def _sweeper_direction(job: Path) -> str | None:
    """`minimize`/`maximize` when the job ran under the Optuna sweeper."""
    f = job / ".hydra" / "hydra.yaml"
    if not f.exists():
        return None
    hydra_cfg = (yaml.safe_load(f.read_text()) or {}).get("hydra") or {}
    direction = (hydra_cfg.get("sweeper") or {}).get("direction")
    return direction if direction in ("minimize", "maximize") else None


def lower_is_better(metric: str, job: Path | None = None) -> bool:
    """The sweeper's direction for the optimised metric; else by name (runner.report.defaults)."""
    if job is not None and metric == _optimized_metric(job) and _sweeper_direction(job):
        return _sweeper_direction(job) == "minimize"
    return defaults.lower_is_better(metric)


def build_report(paths: list[str | Path], *, metrics: list[str] | None = None, where: str | None = None,
                 sort: str | None = None, out_dir: str | Path | None = None, quality: str | None = None,
                 costs: list[str] | None = None, plot: bool = True, baseline: str | Path | None = None) -> Report:
    base_job = _one_job(baseline) if baseline is not None else None
    jobs = find_job_dirs([*([base_job] if base_job else []), *paths])
    runs = load_runs(jobs)
    available = runs.all_columns()
    # Default: the experiment family's short list (quality, throughput, time, cost), else all.
    chosen = _pick(metrics, [c for c in available if c != "job"]) if metrics else \
        (defaults.family_metrics(runs.metric_columns) or default_metrics(runs))
    ident = [c for c in ("status",) if c in available]
    swept = [k for k in runs.swept if k in available and k not in chosen]
    error = [c for c in ("error",) if c in available and c not in chosen]
    columns = ["job", *ident, *swept, *[c for c in chosen if c not in ident], *error]
    rows = runs.query(columns[1:], where=where, sort=sort)

    if out_dir is None:  # the folder asked for, else the jobs' common parent
        single = Path(paths[0]) if len(paths) == 1 and base_job is None else None
        out_dir = single if single is not None and single.is_dir() else \
            Path(os.path.commonpath([str(j) for j in jobs]))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["job"] = os.path.relpath(r["job"], out) if r["job"] != str(out) else "."
    report = Report(out_dir=out, columns=columns, rows=rows, runs=runs)
    report.seed_keys, report.seeds = seeds.seed_table(rows, runs.swept, [c for c in chosen if c not in ident])
    if report.seeds and report.seed_keys:  # several settings, each over seeds: paired row by row, pooled
        report.pooled = pooled.pooled_pairs(pooled.setting_groups(rows, report.seed_keys, out))
    if base_job is not None:  # every other job (those the --where kept) against the baseline
        kept = {str((out / r["job"]).resolve()) for r in rows}
        report.comparison = paired.compare_runs(base_job, [j for j in jobs if j != base_job and str(j) in kept], out)
    pngs = make_plots(report, quality, costs, explicit_metrics=bool(metrics)) if plot else []
    report.files += [write_csv(report), write_markdown(report, pngs), *pngs]
    if report.seeds:
        report.files.append(seeds.write_csv(report.seed_keys, report.seeds, out))
    if report.comparison is not None:
        report.files.append(paired.write_csv(report.comparison, out))
    return report


def _one_job(path: str | Path) -> Path:
    """--baseline names one run: a run folder or one job of a sweep."""
    jobs = find_job_dirs([path])
    if len(jobs) != 1:
        raise ValueError(f"--baseline {path}: {len(jobs)} runs found there; name one run folder (or one job of a sweep)")
    return jobs[0]


def make_plots(report: Report, quality: str | None, costs: list[str] | None,
               explicit_metrics: bool = False) -> list[Path]:
    rows, runs, pdir = report.rows, report.runs, report.out_dir / "report_plots"
    # Plot against the full-path job (rows hold it relative) and only the jobs the --where kept.
    abs_rows = [{**r, "job": str((report.out_dir / r["job"]).resolve())} for r in rows]
    metric_cols = [c for c in report.columns if c not in ("job", "status", "error") and c not in runs.swept]
    for old in pdir.glob("*.png"):  # plots of an earlier report of this folder (other --metrics)
        old.unlink()
    files: list[Path] = []
    # One job: only the stage breakdown says something (a single point plots nothing).
    pairs = [(m, p) for m in metric_cols for p in runs.swept] if len(rows) > 1 else []
    if len(pairs) > MAX_PARAM_PLOTS:
        print(f"plotting the first {MAX_PARAM_PLOTS} of {len(pairs)} metric-vs-parameter pairs; "
              "choose with --metrics")
    ref_cols = [c for m, _ in pairs for c in defaults.REFERENCES.get(m, ()) if c in runs.all_columns()]
    if ref_cols:  # reference metrics need not be table columns
        by_job = {r["job"]: r for r in runs.query(list(dict.fromkeys(ref_cols)))}
        abs_rows = [{**by_job.get(r["job"], {}), **r} for r in abs_rows]
    for m, p in pairs[:MAX_PARAM_PLOTS]:
        refs = tuple(c for c in defaults.REFERENCES.get(m, ()) if c in runs.all_columns())
        files.append(plots.metric_vs_param(abs_rows, m, p, pdir, refs))
    kept = {r["job"] for r in abs_rows}
    totals = {r["job"]: r["total_wall_s"] for r in runs.query(["total_wall_s"]) if r["job"] in kept}
    files.append(plots.stage_breakdown([s for s in runs.stages if s["job"] in kept],
                                       [r["job"] for r in abs_rows], totals, pdir))
    # Quality axis: --quality, else the optimised metric, else the first metric asked for with --metrics,
    # else the family's quality metric (a pipeline without a family: no Pareto plot).
    quality = quality or _optimized_metric(runs.jobs[0]) or (
        next((c for c in metric_cols if not c.startswith("run.")), None) if explicit_metrics
        else defaults.family_quality(runs.metric_columns))
    if len(rows) > 1 and quality and quality in runs.all_columns():
        cost_cols = costs or ["run.wall_s", *[c for c in runs.all_columns() if "cost" in c and c != quality]]
        extra = [c for c in [quality, *cost_cols] if c not in report.columns and c in runs.all_columns()]
        if extra:  # the quality/cost columns may not be among the table's columns
            by_job = {r["job"]: r for r in runs.query(extra)}
            abs_rows = [{**r, **{k: v for k, v in by_job[r["job"]].items() if k != "job"}} for r in abs_rows]
        for c in cost_cols:
            if c in runs.all_columns():
                files.append(plots.quality_vs_cost(abs_rows, quality, c, not lower_is_better(quality, runs.jobs[0]),
                                                   not lower_is_better(c), pdir))
    return [f for f in files if f is not None]


def _fmt(v: Any) -> str:
    return format_value(v, none="")


def write_csv(report: Report) -> Path:
    path = report.out_dir / "report.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(report.columns)
        for r in report.rows:
            w.writerow(["" if r[c] is None else r[c] for c in report.columns])
    return path


def write_markdown(report: Report, pngs: list[Path]) -> Path:
    runs, lines = report.runs, [f"# Report: {report.out_dir}", ""]
    counts: dict[str, int] = {}
    for r in report.rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    lines.append(f"{len(report.rows)} job(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if runs.fixed:
        lines += ["", "Fixed overrides: " + ", ".join(f"`{k}={v}`" for k, v in runs.fixed.items())]
    if runs.swept:
        lines += ["", ("Swept: " if len(runs.jobs) > 1 else "Overrides: ") + ", ".join(f"`{k}`" for k in runs.swept)]
    optuna = report.out_dir / "optimization_results.yaml"
    if optuna.exists():  # written by the Optuna sweeper at the end of the study
        best = yaml.safe_load(optuna.read_text()) or {}
        lines += ["", f"Optuna best value: {best.get('best_value')} with "
                  + ", ".join(f"`{k}={v}`" for k, v in (best.get("best_params") or {}).items())]
    lines += ["", "| " + " | ".join(report.columns) + " |", "|" + "---|" * len(report.columns)]
    for r in report.rows:
        lines.append("| " + " | ".join(_fmt(r[c]).replace("|", "\\|").replace("\n", " ") for c in report.columns)
                     + " |")
    if report.seeds:
        lines += seeds.markdown(report.seed_keys, report.seeds)
    if report.pooled:
        lines += pooled.markdown(report.pooled)
    if report.comparison is not None:
        lines += paired.markdown(report.comparison)
    if pngs:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({os.path.relpath(p, report.out_dir)})" for p in pngs]
    path = report.out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def print_table(report: Report, console: Console | None = None) -> None:
    # Cells and title are Text, never markup: values such as 'pipeline.reuse_from=[/abs/path]' or an
    # error message would otherwise be parsed as rich tags (and crash on a stray closing tag).
    console = console or Console(soft_wrap=True)
    t = Table(title=Text(f"{len(report.rows)} job(s) in {report.out_dir}"))
    for c in report.columns:
        t.add_column(Text(c), justify="left" if c in ("job", "status", "error") else "right",
                     overflow="fold", max_width=60 if c == "error" else None)
    colours = {"ok": "green", "gated": "yellow", "failed": "red"}
    for r in report.rows:
        cells = []
        for c in report.columns:
            s = _fmt(r[c])
            cells.append(Text(s, style=colours.get(s, "") if c == "status" else ""))
        t.add_row(*cells)
    console.print(t)
    if report.seeds:
        seeds.print_seeds(report.seed_keys, report.seeds, console)
    if report.pooled:
        pooled.print_pooled(report.pooled, console)
    if report.comparison is not None:
        paired.print_comparison(report.comparison, console)
