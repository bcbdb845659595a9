"""Seeds aggregated: jobs of a sweep that differ only in `seed` are one setting measured s times.

Training noise is a separate source of variance from the choice of eval rows, and one seed
measures only the latter. When `seed` is among the swept overrides, the jobs are grouped by the
other swept values (a setting); every setting with two or more jobs gets, per chosen numeric
metric, mean, sd, n (seeds that measured it) and the 95 % t-interval over seeds
(runner.core.stats.seed_summary; two seeds give t = 12.7, a wide and honest interval).
Printed after the main table, written as report_seeds.csv and a section of report.md.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.core.stats import fmt_ci, seed_summary

SEED = "seed"


def _numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def seed_table(rows: list[dict[str, Any]], swept: list[str], metrics: list[str]) -> tuple[list[str], list[dict]]:
    """(setting keys, one row per setting and metric: setting values, metric, n, mean, sd, lo, hi);
    empty when seed is not swept or no setting has two jobs."""
    if SEED not in swept or not rows or any(SEED not in r for r in rows):
        return [], []
    keys = [k for k in swept if k != SEED and k in rows[0]]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:  # insertion order: the report's row order
        groups.setdefault(json.dumps([r[k] for k in keys], default=str), []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return [], []
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        for m in metrics:
            values = [r.get(m) for r in group]
            if not _numeric(values):
                continue
            s = seed_summary(values)
            out.append({**{k: group[0][k] for k in keys}, "metric": m, "seeds": len(group), **s})
    return keys, out


def _digits(v: float | None) -> int:
    return 3 if v is None or abs(v) < 100 else 1


def _cell(r: dict[str, Any]) -> str:
    return fmt_ci(r["mean"], r["lo"], r["hi"], _digits(r["mean"]))


def _sd(r: dict[str, Any]) -> str:
    return "" if r["sd"] is None else f"{r['sd']:.{_digits(r['mean'])}f}"


CAPTION = "mean over seeds ± 95 % t-interval half-width (t(0.975, n-1)·sd/√n); n = seeds that measured it"


def write_csv(keys: list[str], table: list[dict], out_dir: Path) -> Path:
    path = out_dir / "report_seeds.csv"
    cols = [*keys, "metric", "seeds", "n", "mean", "sd", "lo", "hi"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in table:
            w.writerow(["" if r[c] is None else r[c] for c in cols])
    return path


def markdown(keys: list[str], table: list[dict]) -> list[str]:
    lines = ["", "## Over seeds", "", CAPTION + ".", "",
             "| " + " | ".join([*keys, "metric", "n", "mean [95% CI]", "sd"]) + " |", "|" + "---|" * (len(keys) + 4)]
    for r in table:
        lines.append("| " + " | ".join([*(str(r[k]) for k in keys), r["metric"], str(r["n"]), _cell(r), _sd(r)])
                     + " |")
    return lines


def print_seeds(keys: list[str], table: list[dict], console: Console) -> None:
    t = Table(title=Text("over seeds"), caption=Text(CAPTION))
    for c in [*keys, "metric", "n", "mean [95% CI]", "sd"]:
        t.add_column(Text(c), justify="left" if c == "metric" else "right")
    for r in table:
        t.add_row(*[Text(str(r[k])) for k in keys], Text(r["metric"]), str(r["n"]), _cell(r), _sd(r))
    console.print(t)
