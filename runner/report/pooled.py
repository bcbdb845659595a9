"""Two settings compared row by row, pooled over seeds.

A sweep of settings x seeds (e.g. filters=none,default x seed=0,1) measures each setting on the same
eval rows once per seed. For each setting against the first one (the reference), and each eval set
both wrote, every eval row's outcome is averaged over the seeds both settings ran on those same rows;
the difference of these per-row means is resampled by row (paired bootstrap, 95 %), so a row's
seeds move together and the interval covers both the rows drawn and the training noise of the seeds
run. Seeds whose eval rows differ between the two settings are left out (and counted).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.core.stats import fmt_ci, paired_bootstrap
from runner.report.paired import SCORES, eval_sets

SEED = "seed"
CAPTION = ("difference of per-row means over seeds (setting - reference), paired bootstrap over rows, 95 %; "
           "rows: eval rows, each averaged over its seeds")


def setting_groups(rows: list[dict[str, Any]], keys: list[str], out: Path) -> dict[str, dict[Any, Path]]:
    """{"k=v, ...": {seed: job folder}} for a report's rows (jobs relative to `out`)."""
    groups: dict[str, dict[Any, Path]] = {}
    for r in rows:
        label = ", ".join(f"{k}={json.dumps(r[k], default=str)}" for k in keys) or "all"
        groups.setdefault(label, {})[r[SEED]] = (out / r["job"]).resolve()
    return groups


def pooled_pairs(groups: dict[str, dict[Any, Path]], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    labels = list(groups)
    if len(labels) < 2:
        return []
    ref = labels[0]
    ref_sets = {s: eval_sets(job) for s, job in groups[ref].items()}
    out = []
    for label in labels[1:]:
        common = [s for s in groups[label] if s in groups[ref]]
        other = {s: eval_sets(groups[label][s]) for s in common}
        names = [n for n in (ref_sets[common[0]] if common else {})
                 if all(n in ref_sets[s] and n in other[s] for s in common)]
        for name in names:
            frames, skipped = [], 0
            for s in common:
                a, b = ref_sets[s][name], other[s][name]
                if set(a["sample_id"].to_list()) != set(b["sample_id"].to_list()):
                    skipped += 1
                    continue
                frames.append(a.join(b, on="sample_id", suffix="_b"))
            if not frames:
                continue
            per_row = pl.concat(frames).group_by("sample_id").agg(
                *[pl.col(c).cast(pl.Float64).mean() for c, _ in SCORES],
                *[pl.col(f"{c}_b").cast(pl.Float64).mean() for c, _ in SCORES]).sort("sample_id")
            for col, metric in SCORES:
                x, y = per_row[col].to_numpy(), per_row[f"{col}_b"].to_numpy()
                diff, lo, hi = paired_bootstrap(x, y, n_boot=n_boot, seed=seed)
                out.append({"setting": label, "reference": ref, "metric": f"{name}.{metric}",
                            "seeds": len(frames), "seeds_skipped": skipped, "rows": per_row.height,
                            "reference_mean": float(np.mean(x)), "mean": float(np.mean(y)),
                            "diff": diff, "lo": lo, "hi": hi})
    return out


def markdown(table: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Settings paired over seeds", "", CAPTION + ".", "",
             "| setting | reference | metric | seeds | rows | reference | setting | diff [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['setting']} | {r['reference']} | {r['metric']} | {r['seeds']} | {r['rows']} | "
                     f"{r['reference_mean']:.3f} | {r['mean']:.3f} | {fmt_ci(r['diff'], r['lo'], r['hi'])} |")
    return lines


def print_pooled(table: list[dict[str, Any]], console: Console) -> None:
    t = Table(title=Text("settings paired over seeds"), caption=Text(CAPTION))
    for c in ("setting", "reference", "metric", "seeds", "rows", "ref. mean", "mean", "diff [95% CI]"):
        t.add_column(Text(c), justify="left" if c in ("setting", "reference", "metric") else "right")
    for r in table:
        t.add_row(Text(r["setting"]), Text(r["reference"]), Text(r["metric"]), str(r["seeds"]), str(r["rows"]),
                  f"{r['reference_mean']:.3f}", f"{r['mean']:.3f}", fmt_ci(r["diff"], r["lo"], r["hi"]))
    console.print(t)
