"""What a run prints when it ends: one screen, the few numbers that say whether it worked.

Status and wall time; the experiment family's short list of metrics (runner.report.defaults),
each beside its baselines (the student before training, the teacher on the same rows, the
constant answer); stage times on one line; the notices; where the outputs are. `summary: full`
in config (or `python -m runner.report RUN --metrics '*'`) prints every metric.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.core.console import format_value
from runner.core.stats import fmt_ci
from runner.report.defaults import baselines_of, family_metrics

_SKIP_PREFIX = ("version.", "run.git_commit", "run.host", "run.platform", "run.started_at", "run.ended_at")
MAX_ROWS = 14  # the short list is longer for no family: cap it, the full table is one flag away


def rate_text(metrics: dict[str, Any], key: str) -> str:
    """`0.449 ± 0.031` when the metric has a 95 % interval (`<key>_ci95` = [lo, hi]), else the value."""
    v, ci = metrics.get(key), metrics.get(f"{key}_ci95")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(ci, (list, tuple)) \
            and len(ci) == 2 and None not in ci:
        return fmt_ci(float(v), ci[0], ci[1])
    return format_value(_round(v))


PAIRS = {"post_vs_teacher": "student_post vs teacher", "post_plain_vs_teacher": "student_post_plain vs teacher",
         "post_vs_pre": "student_post vs student_pre"}


def paired_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per paired comparison the compare stage made (same eval rows)."""
    out = []
    for name, label in PAIRS.items():
        parts = []
        for outcome in ("gold_match", "exec_pass"):
            d, ci = metrics.get(f"compare.{name}.{outcome}_diff"), metrics.get(f"compare.{name}.{outcome}_diff_ci95")
            p = metrics.get(f"compare.{name}.{outcome}_p_mcnemar")
            if d is None:
                continue
            txt = fmt_ci(d, *ci) if isinstance(ci, list) and None not in ci else format_value(d)
            parts.append(f"{outcome} {'+' if d >= 0 else ''}{txt}" + (f" (McNemar p={p:.2g})" if p is not None else ""))
        if parts:
            out.append(f"paired, {label} on {metrics.get(f'compare.{name}.rows')} rows: " + "; ".join(parts))
    return out


def _round(v: Any) -> Any:
    """Rates and baselines with three decimals, so a column reads alike (0.000, not 0)."""
    return f"{v:.3f}" if isinstance(v, float) else v


def stage_line(timing: dict[str, Any], keep: int = 6) -> str:
    """The slowest stages in pipeline order, the rest summed: one line, two at most on a terminal."""
    walls = {name: s["wall_s"] for name, s in timing.get("stages", {}).items() if isinstance(s.get("wall_s"), (int, float))}
    top = set(sorted(walls, key=walls.get, reverse=True)[:keep])
    parts = [f"{name} {w:.1f}s" for name, w in walls.items() if name in top]
    rest = [w for name, w in walls.items() if name not in top]
    if rest:
        parts.append(f"{len(rest)} others {sum(rest):.1f}s")
    total = timing.get("total_wall_s")
    return "stages: " + " · ".join(parts) + (f" (total {total:.1f}s)" if isinstance(total, (int, float)) else "")


def short_keys(metrics: dict[str, Any]) -> list[str]:
    keys = [k for k in metrics if not k.startswith(_SKIP_PREFIX) and not isinstance(metrics[k], (dict, list))]
    chosen = family_metrics(keys)
    if chosen is None:  # no family: the metrics the pipeline's stages wrote, not the run's bookkeeping
        chosen = [k for k in keys if not k.startswith("run.") and k not in ("status", "experiment", "seed")]
    shown_as_baseline = {ref for k in chosen for _, ref in baselines_of(k)}
    return [k for k in chosen if k not in ("run.wall_s",) and k not in shown_as_baseline][:MAX_ROWS]


def print_summary(metrics: dict[str, Any], timing: dict[str, Any], run_dir: Path,
                  console: Console | None = None, full: bool = False) -> None:
    console = console or Console(stderr=False, soft_wrap=True)
    status = metrics.get("status")
    colour = {"ok": "green", "gated": "yellow"}.get(status, "red")
    wall = metrics.get("run.wall_s")
    console.print(f"run {metrics.get('experiment')} - [{colour}]{status}[/{colour}]"
                  + (f" in {wall:.1f}s" if isinstance(wall, (int, float)) else ""))
    if metrics.get("error"):
        console.print(Text(f"error: {metrics['error']}", style="red"))
    t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    keys = [k for k in metrics if not k.startswith(_SKIP_PREFIX) and not isinstance(metrics[k], (dict, list))] \
        if full else short_keys(metrics)
    # Baselines on the same eval rows: the student before training, the teacher, the constant answer.
    present = {label for k in keys for label, ref in baselines_of(k) if metrics.get(ref) is not None}
    labels = [label for label in ("before", "teacher", "constant") if label in present]
    t.add_column("metric", overflow="fold")
    t.add_column("value (95% CI)", justify="right")
    for label in labels:
        t.add_column(label, justify="right")
    for k in keys:
        refs = dict(baselines_of(k))
        t.add_row(k, rate_text(metrics, k), *[format_value(_round(metrics.get(refs[label])), "") if label in refs
                                               else "" for label in labels])
    if keys:
        console.print(t)
    for line in paired_lines(metrics):
        console.print(line, markup=False)
    console.print(stage_line(timing), markup=False)
    if str(metrics.get("train.stopped_by", "")).startswith("wall"):
        console.print(Text(f"NOTE: training stopped by the wall clock ({metrics['train.stopped_by']}, "
                           f"{metrics.get('train.steps')} steps): not reproducible; set trainer.max_steps",
                           style="bold yellow"))
    for note in metrics.get("run.notices") or []:  # e.g. a simulated teacher: its numbers are not measurements
        console.print(Text(f"NOTE: {note}", style="bold yellow"))
    console.print(f"outputs: {run_dir}", markup=False)
    if not full:
        console.print(f"all metrics: python -m runner.report {run_dir} --metrics '*'", markup=False)
