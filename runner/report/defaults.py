"""Which metrics a report shows by default, and which direction is better for each.

A run has ~100 metrics, most of them counts and constants (load.pool, token counts): a table or a
plot of all of them hides the few that say whether a setting is better. Each experiment family
(recognised by a metric only it writes) has a short list: quality, throughput, time and cost.
Edit FAMILIES to change them, or pick per report with --metrics.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    marker: str            # a metric only this family writes
    metrics: tuple[str, ...]   # names or globs, in table order; absent ones are left out
    quality: tuple[str, ...]   # the Pareto plot's quality axis: the first one present


FAMILIES = {
    "text2sql": Family(
        marker="teacher.total",
        # teacher.simulated first: a simulated teacher's rates are a calibration, not a measurement
        metrics=("teacher.simulated", "teacher.gold_match_rate", "teacher.exec_pass_rate",
                 "distilled.gold_match_rate", "distilled.exec_pass_rate", "distilled.keep_rate",
                 "student_post.gold_match_rate", "student_post.exec_pass_rate",
                 "compare.constant_baseline_exec_pass_rate", "compare.student_top_prediction_share",
                 "run.wall_s", "teacher.cost_usd"),
        quality=("student_post.gold_match_rate", "distilled.gold_match_rate", "teacher.gold_match_rate")),
    "consistency_distill": Family(
        marker="cd.nrmse_student_1step",
        metrics=("cd.nrmse_student_1step", "cd.nrmse_teacher", "cd.student_over_teacher_nrmse",
                 "cd.sampling_speedup", "cd.distill_wall_s", "run.wall_s"),
        quality=("cd.nrmse_student_1step",)),
}


# Reference lines drawn on a metric's plots: what the teacher scores on the same eval rows, and what
# the constant baseline (the student's most frequent answer on every row) scores. A student curve
# means something only between these two.
REFERENCES = {
    "student_post.gold_match_rate": ("compare.teacher_gold_match_rate", "compare.constant_baseline_gold_match_rate"),
    "student_post.exec_pass_rate": ("compare.teacher_exec_pass_rate", "compare.constant_baseline_exec_pass_rate"),
}


def baselines_of(metric: str) -> list[tuple[str, str]]:
    """(label, metric) pairs a metric is read against, measured on the same eval rows: for a student
    rate, the student before training, the teacher and the constant answer; for the teacher's and
    the distilled set's rates, the constant answer."""
    scope, _, name = metric.partition(".")
    if scope.startswith("student_") and scope != "student_pre" and name.endswith("_rate"):
        return [("before", f"student_pre.{name}"), ("teacher", f"compare.teacher_{name}"),
                ("constant", f"compare.constant_baseline_{name}")]
    if scope in ("teacher", "distilled") and name in ("gold_match_rate", "exec_pass_rate"):
        return [("constant", f"compare.constant_baseline_{name}")]
    return [(label, ref) for ref, label in zip(REFERENCES.get(metric, ()), ("teacher", "constant"))]


def baseline_refs(metric: str) -> dict[str, str]:
    return dict(baselines_of(metric))


def family_of(columns: list[str]) -> Family | None:
    return next((f for f in FAMILIES.values() if f.marker in columns), None)


def family_metrics(columns: list[str]) -> list[str] | None:
    """The family's short list (those present), or None for a pipeline without a family."""
    fam = family_of(columns)
    if fam is None:
        return None
    out: list[str] = []
    for pat in fam.metrics:
        out += [c for c in columns if fnmatch.fnmatchcase(c, pat) and c not in out]
    return out


def family_quality(columns: list[str]) -> str | None:
    fam = family_of(columns)
    return next((q for q in fam.quality if q in columns), None) if fam else None


# Direction by name, first match wins. Failures, errors of a fit and money are always "lower"
# (teacher.error_rate is not a quality rate); then quality and throughput are "higher" (rows_per_s
# ends in _s); then time, size and memory are "lower"; anything else: higher.
_ALWAYS_LOWER = re.compile(r"error|empty|truncat|dropped|reject|failed|collapsed|nrmse|mse|loss|cost")
_HIGHER = re.compile(r"per_s|per_hour|speedup|retention|gain|match|pass|accuracy|f1|judge|keep_rate|same_")
_LOWER = re.compile(r"latency|wall|_s$|seconds|peak_rss|bytes|params|tokens_in|tokens_out|attempts")


def lower_is_better(metric: str) -> bool:
    name = metric.lower()
    if _ALWAYS_LOWER.search(name):
        return True
    return not _HIGHER.search(name) and bool(_LOWER.search(name))
