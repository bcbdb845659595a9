"""`python -m runner.report [--baseline RUN] PATH... [--metrics a,b] [--where SQL] [--sort SQL] [--out DIR]`

PATH is a run folder, a sweep folder (searched for job folders) or a glob. Prints a comparison
table (swept parameters as columns) and writes report.csv, report.md and report_plots/*.png next
to the sweep (or into --out). Jobs that differ only in `seed` are also summarised per setting
(mean, sd, n, 95 % t-interval over seeds; report_seeds.csv).

--baseline RUN (one run folder, or one job of a sweep): each other job is compared with RUN row by
row on every eval set both hold (teacher_eval, student_pre, student_post, ...): gold match and
exec pass difference with a 95 % paired-bootstrap interval and the exact McNemar p-value
(report_paired.csv). Exit status 1 when a job holds other eval rows than RUN (named, with how
many rows are only in each) or shares no eval set with it.
"""
from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape

from runner.report.build import build_report, print_table


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run folder, sweep folder, or glob (quote it)")
    ap.add_argument("--baseline", help="run folder (or one sweep job) the other runs are compared with, row by row")
    ap.add_argument("--metrics", type=_csv_list, help="comma list of metrics.json keys or globs "
                    "(e.g. 'teacher.*,student_post.gold_match_rate'); default: the experiment family's short list "
                    "(runner/report/defaults.py), all metrics for other pipelines; '*' for all")
    ap.add_argument("--where", help="DuckDB filter, e.g. \"status = 'ok'\" or '\"teacher.total\" > 10'")
    ap.add_argument("--sort", help="DuckDB ORDER BY, e.g. '\"summary.mean_x\" DESC'")
    ap.add_argument("--out", help="folder for report.csv/report.md/plots (default: the sweep folder)")
    ap.add_argument("--quality", help="metric for the quality-vs-cost plot (default: optimized_metric)")
    ap.add_argument("--cost", type=_csv_list, help="cost columns for that plot (default: run.wall_s and *cost*)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    args = ap.parse_args(argv)
    console = Console(soft_wrap=True)
    if not console.is_terminal:  # piped or in CI: do not squeeze a wide table into 80 columns
        console.width = max(console.width, 200)
    try:
        report = build_report(args.paths, metrics=args.metrics, where=args.where, sort=args.sort,
                              out_dir=args.out, quality=args.quality, costs=args.cost,
                              plot=not args.no_plots, baseline=args.baseline)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")  # paths and SQL may hold [brackets]
        return 2
    print_table(report, console)
    for f in report.files:
        console.print(f"wrote {f}", markup=False)
    cmp = report.comparison
    if cmp is not None and (cmp.mismatches or cmp.notes):  # a comparison asked for and not made
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
