"""The `gate` group: teacher quality thresholds checked on a pilot sample BEFORE the rest of the
teacher calls are paid for (in the `teacher` stage), and again on the full teacher train set
before anything is distilled or trained (the `gate` stage).

A threshold of 0 disables that check (it is reported as `disabled`, never silently replaced
by a default). A failed check with `enforce=true` raises GateFailed: status `gated`, exit 3.
`artifacts/gate_report.json` holds {"pilot": ..., "full": ...}, each with every threshold,
its measured value and the verdict.
"""
from __future__ import annotations

import json
from typing import Any

import polars as pl

from runner.core.stage import ConfigError, GateFailed, Stage, check_range
from runner.text2sql.quality import label, rates

REPORT = "gate_report.json"
# (threshold attribute, measured key in quality.rates)
_RATE_CHECKS = (("min_exec_pass_rate", "exec_pass_rate"), ("min_gold_match_rate", "gold_match_rate"),
                ("min_judge_mean", "judge_mean"))


class Gate:
    def __init__(self, enforce: bool = True, pilot_size: int = 50, min_total: int = 50,
                 min_exec_pass_rate: float = 0.5, min_gold_match_rate: float = 0.1,
                 min_judge_mean: float = 0.4, max_cost_usd: float | None = None,
                 max_wall_s: float | None = None, min_expected_kept: int | None = None):
        self.enforce, self.pilot_size, self.min_total = enforce, pilot_size, min_total
        self.min_exec_pass_rate, self.min_gold_match_rate = min_exec_pass_rate, min_gold_match_rate
        self.min_judge_mean = min_judge_mean
        # Budget limits on the pilot's forecast (runner.distill.forecast); None = no limit.
        self.max_cost_usd, self.max_wall_s, self.min_expected_kept = max_cost_usd, max_wall_s, min_expected_kept

    def validate(self, judge_kind: str | None = None) -> None:
        if not isinstance(self.enforce, bool):
            raise ConfigError(f"gate.enforce must be true or false, got {self.enforce!r}")
        for key in ("pilot_size", "min_total"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"gate.{key}={v!r} must be an integer >= 0 (0 disables it)")
        for key, _ in _RATE_CHECKS:
            check_range("gate", key, getattr(self, key), 0, 1)
        check_range("gate", "max_cost_usd", self.max_cost_usd, 0)
        check_range("gate", "max_wall_s", self.max_wall_s, 0, lo_open=True)
        check_range("gate", "min_expected_kept", self.min_expected_kept, 0)
        if (self.max_cost_usd is not None or self.max_wall_s is not None
                or self.min_expected_kept is not None) and not self.pilot_size:
            raise ConfigError("gate.max_cost_usd / max_wall_s / min_expected_kept are checked on the pilot's "
                              "forecast, but gate.pilot_size=0 runs no pilot. Fix: set gate.pilot_size > 0 "
                              "or null the budget limits.")
        if judge_kind == "none" and self.min_judge_mean > 0:
            raise ConfigError(no_judge_score("gate.min_judge_mean", self.min_judge_mean, "filters.min_score"))

    def check(self, df: pl.DataFrame, *, phase: str, planned_total: int | None = None) -> dict[str, Any]:
        """Every check with threshold, measured value and verdict. In the pilot, min_total is
        checked against the number of train rows the full run WILL generate (planned_total):
        a run too small to pass later is stopped before paying for it."""
        measured = rates(df)
        total = planned_total if phase == "pilot" and planned_total is not None else measured["total"]
        checks = [self._check("min_total", self.min_total, total)]
        for key, metric in _RATE_CHECKS:
            checks.append(self._check(key, getattr(self, key), measured.get(metric)))
        passed = all(c["passed"] is not False for c in checks)
        return label({"phase": phase, "rows": df.height, "passed": passed, "enforce": self.enforce,
                      "checks": checks, "measured": measured}, df)

    @staticmethod
    def _check(name: str, threshold: float, value: float | None) -> dict[str, Any]:
        if not threshold:
            return {"check": name, "threshold": threshold, "value": value, "passed": None, "status": "disabled"}
        if value is None:  # e.g. no judge scores: cannot be measured, so the check cannot pass
            return {"check": name, "threshold": threshold, "value": None, "passed": False,
                    "status": "not_measured"}
        ok = value >= threshold
        return {"check": name, "threshold": threshold, "value": value, "passed": ok,
                "status": "pass" if ok else "fail"}


def no_judge_score(key: str, value: float, other: str) -> str:
    """judge=none with a threshold on the judge score. The fix names BOTH score thresholds (gate
    and filter): fixing only one leads to the other (the filter would then reject every row)."""
    return (f"judge=none gives no judge score, but {key}={value} needs one. Fix: choose judge=rule or "
            f"judge=llm, or set {key}=0 and {other}=0 (both thresholds use the judge score).")


def failure_message(report: dict[str, Any]) -> str:
    failed = [f"{c['check']}: measured {c['value']} < {c['threshold']}" if c["status"] == "fail"
              else f"{c['check']}: not measured" for c in report["checks"] if c["passed"] is False]
    return (f"teacher gate failed on the {report['phase']} ({report['rows']} rows): " + "; ".join(failed)
            + f". Report: artifacts/{REPORT}. Fix: a better teacher/prompt, or lower the gate.* thresholds "
              "(0 disables a check), or gate.enforce=false to record and continue.")


def record(ctx, report: dict[str, Any]) -> None:
    """Merge this phase into gate_report.json and log gate.<phase>_passed (+ gate.passed)."""
    path = ctx.store.path(REPORT)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[report["phase"]] = report
    ctx.store.write_json(REPORT, existing)
    ctx.metrics.log(f"gate.{report['phase']}_passed", report["passed"])
    ctx.metrics.log("gate.passed", report["passed"])
    ctx.metrics.log("gate.enforce", report["enforce"])


def enforce(ctx, gate: Gate, report: dict[str, Any]) -> None:
    record(ctx, report)
    if report["passed"]:
        return
    msg = failure_message(report)
    if gate.enforce:
        raise GateFailed(msg, report)
    ctx.log.warning("%s (gate.enforce=false: continuing)", msg)


class GateStage(Stage):
    """The full-set check: on every teacher row of the train split."""

    reads = ("teacher_judged",)
    writes = (REPORT,)

    def __init__(self, gate: Gate):
        self.gate = gate

    def validate(self, ctx):
        self.gate.validate()

    def run(self, ctx):
        df = ctx.store.read("teacher_judged").filter(pl.col("split") == "train")
        ctx.timer.add_items(df.height)
        enforce(ctx, self.gate, self.gate.check(df, phase="full"))
