"""The teacher quality gate: threshold semantics, and the pilot stopping a bad teacher early."""
from __future__ import annotations

import json
import sqlite3

import polars as pl
import pytest

from runner.core.stage import ConfigError
from runner.distill.gate import Gate
from runner.engine.cache import ResponseCache
from tests.conftest import REPO, read_metrics, requires_data, run_cli

# The run must end after the teacher half: student stages off where trainer=none exists.
STUDENT_OFF = ["trainer=none"] if (REPO / "conf" / "trainer" / "none.yaml").exists() else []


def _frame(exec_pass, gold, judge):
    return pl.DataFrame({"exec_pass": exec_pass, "gold_match": gold, "judge_score": judge,
                         "clean_sql": ["SELECT 1" if e else "" for e in exec_pass]},
                        schema={"exec_pass": pl.Boolean, "gold_match": pl.Boolean, "judge_score": pl.Float64,
                                "clean_sql": pl.String})


def test_checks_report_threshold_and_measured_value():
    df = _frame([True, True, False, False], [True, False, False, False], [1.0, 0.5, 0.0, 0.0])
    report = Gate(min_total=4, min_exec_pass_rate=0.6, min_gold_match_rate=0.25, min_judge_mean=0.3).check(
        df, phase="full")
    by = {c["check"]: c for c in report["checks"]}
    assert by["min_total"] == {"check": "min_total", "threshold": 4, "value": 4, "passed": True, "status": "pass"}
    assert by["min_exec_pass_rate"]["value"] == 0.5 and by["min_exec_pass_rate"]["status"] == "fail"
    assert by["min_gold_match_rate"]["value"] == 0.25 and by["min_gold_match_rate"]["passed"] is True
    assert by["min_judge_mean"]["value"] == pytest.approx(0.375)
    assert report["passed"] is False


def test_zero_disables_a_check_instead_of_falling_back_to_a_default():
    df = _frame([False] * 3, [False] * 3, [0.0] * 3)
    report = Gate(min_total=0, min_exec_pass_rate=0, min_gold_match_rate=0, min_judge_mean=0).check(df, phase="full")
    assert report["passed"] is True
    assert {c["status"] for c in report["checks"]} == {"disabled"}


def test_unmeasurable_check_fails_and_pilot_uses_planned_total():
    df = _frame([True] * 5, [True] * 5, [None] * 5)
    report = Gate(min_total=50, min_judge_mean=0.4).check(df, phase="pilot", planned_total=40)
    by = {c["check"]: c for c in report["checks"]}
    assert by["min_total"]["value"] == 40 and by["min_total"]["status"] == "fail"
    assert by["min_judge_mean"]["status"] == "not_measured" and report["passed"] is False


@pytest.mark.parametrize("kwargs, match", [
    ({"min_exec_pass_rate": 1.5}, "min_exec_pass_rate"), ({"pilot_size": -1}, "pilot_size"),
    ({"enforce": "yes"}, "enforce"), ({"min_total": 2.5}, "min_total")])
def test_invalid_gate_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Gate(**kwargs).validate()


def test_judge_none_needs_min_judge_mean_zero():
    with pytest.raises(ConfigError, match="judge=none"):
        Gate(min_judge_mean=0.4).validate(judge_kind="none")
    Gate(min_judge_mean=0).validate(judge_kind="none")


@requires_data
def test_failed_pilot_stops_before_the_rest_is_generated(tmp_path):
    # A terrible simulated teacher: most answers are invalid SQL or empty.
    bad = ["provider.invalid_sql_rate=0.9", "provider.empty_rate=0.05"]
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", *STUDENT_OFF, *bad], tmp_path, timeout=120)
    assert proc.returncode == 3, proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["status"] == "gated" and m["gate.passed"] is False and m["failed_stage"] == "teacher"
    assert m["teacher.requests"] == m["teacher.pilot_requests"] == 10  # only the pilot was paid for
    # The durable cache holds exactly the pilot's answers (nothing else was ever sent).
    con = sqlite3.connect(tmp_path / "cache" / ResponseCache.FILENAME)
    try:
        assert con.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 10
    finally:
        con.close()
    report = json.loads((run_dir / "artifacts" / "gate_report.json").read_text())
    assert set(report) == {"pilot"}
    by = {c["check"]: c for c in report["pilot"]["checks"]}
    assert by["min_exec_pass_rate"]["status"] == "fail" and by["min_exec_pass_rate"]["value"] < 0.5
    assert "min_exec_pass_rate" in m["error"]
    assert not (run_dir / "artifacts" / "teacher_raw.parquet").exists()


@requires_data
def test_enforce_false_records_and_continues_without_pilot(tmp_path):
    args = ["+experiment=wikisql_smoke", *STUDENT_OFF, "provider.invalid_sql_rate=0.9", "gate.enforce=false", "gate.pilot_size=0"]
    proc, run_dir = run_cli(args, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and m["gate.passed"] is False and "teacher.pilot_requests" not in m
    report = json.loads((run_dir / "artifacts" / "gate_report.json").read_text())
    assert set(report) == {"full"} and report["full"]["passed"] is False
    assert m["teacher.requests"] == 50


def test_reports_say_when_the_teacher_is_simulated():
    from runner.distill.gate import Gate
    from runner.text2sql.quality import quality_report

    df = pl.DataFrame({"split": ["train"] * 2, "clean_sql": ["SELECT 1", ""], "exec_pass": [True, False],
                       "gold_match": [True, False], "judge_score": [1.0, 0.0], "error": [None, None],
                       "simulated": [True, True]})
    report = Gate(min_total=0, min_exec_pass_rate=0, min_gold_match_rate=0, min_judge_mean=0).check(df, phase="full")
    assert report["simulated"] is True and "calibration" in report["simulated_note"]
    assert quality_report(df, teacher_total=2)["simulated"] is True
    real = quality_report(df.with_columns(simulated=pl.lit(False)), teacher_total=2)
    assert real["simulated"] is False and "simulated_note" not in real
