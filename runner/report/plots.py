"""PNG plots for a report: metric vs swept parameter, stage-time breakdown, quality vs cost (Pareto)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.core.plotting import pyplot, save_figure


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _label(job: str) -> str:
    p = Path(job)
    return p.name if p.name.isdigit() else f"{p.parent.name}/{p.name}"


MAX_INT_CATEGORIES = 20  # integer sweeps with more values (e.g. an Optuna int range) plot on a number line


def categorical_axis(values: list[Any]) -> list[Any] | None:
    """The ordered categories when x should be categorical, else None (a continuous axis).
    Strings and bools are categories; so are integers (seed=1,2,3, n_layers=2,4: a line between
    them or ticks at 1.5 would suggest values that were never run), unless there are very many.
    Numbers sort as numbers, not as text (10 after 9)."""
    distinct = list(dict.fromkeys(values))
    if all(_is_num(v) for v in distinct):
        if not all(isinstance(v, int) for v in distinct) or len(distinct) > MAX_INT_CATEGORIES:
            return None
        return sorted(distinct)
    return sorted(distinct, key=lambda v: (not _is_num(v), v if _is_num(v) else str(v)))


def reference_label(ref: str, rows: list[dict[str, Any]]) -> str:
    """A reference line's legend: a simulated teacher's line says so (its rate is a calibration)."""
    if "teacher" in ref and any(r.get("teacher.simulated") for r in rows):
        return f"{ref} (SIMULATED teacher)"
    return ref


def metric_vs_param(rows: list[dict[str, Any]], metric: str, param: str, out: Path,
                    refs: tuple[str, ...] = ()) -> Path | None:
    """Scatter of one metric against one swept parameter (categorical x for strings, bools and
    integers: see categorical_axis). Failed/gated jobs have no metric value and are left out of
    the points (the table lists them)."""
    pts = [(r[param], r[metric]) for r in rows if _is_num(r.get(metric)) and r.get(param) is not None]
    if not pts:
        return None
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    cats = categorical_axis([x for x, _ in pts])
    pos = (lambda x: x) if cats is None else cats.index
    pts.sort(key=lambda p: pos(p[0]))
    ax.plot([pos(x) for x, _ in pts], [y for _, y in pts], "o-" if refs else "o", label=metric)
    for ref, style in zip(refs, ("--", ":", "-.")):  # e.g. the teacher and the constant baseline
        ref_pts = sorted(((pos(r[param]), r[ref]) for r in rows if _is_num(r.get(ref)) and r.get(param) is not None),
                         key=lambda p: p[0])
        if ref_pts:
            ax.plot([x for x, _ in ref_pts], [y for _, y in ref_pts], style, color="grey",
                    label=reference_label(ref, rows))
    if refs:
        ax.legend(fontsize=6)
    if cats is not None:
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30 if len(cats) > 6 else 0,
                      ha="right" if len(cats) > 6 else "center")
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {param}", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, out / f"{_slug(metric)}__vs__{_slug(param)}.png")


def stage_breakdown(stages: list[dict[str, Any]], job_order: list[str], totals: dict[str, float | None],
                    out: Path) -> Path | None:
    """Stacked bars: one bar per job, one segment per stage (wall seconds), plus `other` = the run's
    total_wall_s minus its stages (building, validating, writing outputs)."""
    if not stages:
        return None
    names: list[str] = []
    for s in stages:
        if s["stage"] not in names:
            names.append(s["stage"])
    wall = {(s["job"], s["stage"]): s["wall_s"] or 0.0 for s in stages}
    for j, total in totals.items():
        if total is not None:
            wall[(j, "other")] = max(0.0, total - sum(s["wall_s"] or 0.0 for s in stages if s["job"] == j))
    names.append("other")
    jobs = [j for j in job_order if any(s["job"] == j for s in stages)]
    fig, ax = pyplot().subplots(figsize=(max(4, 0.6 * len(jobs) + 2), 3.8))
    bottom = [0.0] * len(jobs)
    for name, colour in zip(names, stage_colours(len(names))):
        h = [wall.get((j, name), 0.0) for j in jobs]
        ax.bar(range(len(jobs)), h, bottom=bottom, label=name, color=colour)
        bottom = [b + x for b, x in zip(bottom, h)]
    ax.set_xticks(range(len(jobs)), [_label(j) for j in jobs], rotation=30 if len(jobs) > 6 else 0)
    ax.set_ylabel("wall seconds")
    ax.set_title("stage-time breakdown", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "stage_times.png")


def stage_colours(n: int) -> list[Any]:
    """n distinct colours, the last (`other`) grey: matplotlib's default cycle repeats after 10,
    and the Text2SQL pipeline has 15 stages (two stages in one colour read as one). tab20's dark
    shades first, then its light ones, without its greys (they would look like `other`)."""
    tab20 = pyplot().get_cmap("tab20")
    palette = [tab20(i) for i in [*range(0, 20, 2), *range(1, 20, 2)] if i not in (14, 15)]
    stages = n - 1
    if stages > len(palette):
        turbo = pyplot().get_cmap("turbo")
        palette = [turbo(i / max(1, stages - 1)) for i in range(stages)]
    return [*palette[:stages], (0.6, 0.6, 0.6, 1.0)][:n]


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points (cost, quality) that no other point beats on both: cost lower or equal
    and quality at least as good, with one strictly better."""
    def better_eq(a: float, b: float) -> bool:
        return a >= b if higher_is_better else a <= b

    front = []
    for i, (c, q) in enumerate(points):
        dominated = any(c2 <= c and better_eq(q2, q) and (c2 < c or q2 != q)
                        for j, (c2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def quality_vs_cost(rows: list[dict[str, Any]], quality: str, cost: str, higher_is_better: bool,
                    cost_higher_is_better: bool, out: Path) -> Path | None:
    """Scatter with the Pareto front; both directions are per metric (e.g. nrmse: lower is better;
    a throughput on the x axis: higher is better, so it is negated for the front)."""
    keep = [r for r in rows if _is_num(r.get(quality)) and _is_num(r.get(cost))]
    if not keep:
        return None
    pts = [(float(r[cost]), float(r[quality])) for r in keep]
    sign = -1.0 if cost_higher_is_better else 1.0
    front = pareto_front([(sign * c, q) for c, q in pts], higher_is_better)
    front.sort(key=lambda i: pts[i][0])
    fig, ax = pyplot().subplots(figsize=(5, 3.8))
    ax.plot([c for c, _ in pts], [q for _, q in pts], "o", color="tab:gray", label="job")
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "o-", color="tab:red", label="Pareto front")
    for r, (c, q) in zip(keep, pts):
        ax.annotate(_label(r["job"]), (c, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{cost} ({'higher' if cost_higher_is_better else 'lower'} is better)")
    ax.set_ylabel(f"{quality} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.set_title("quality vs cost", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out / f"pareto__{_slug(quality)}__vs__{_slug(cost)}.png")


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path)
