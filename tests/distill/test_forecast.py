"""Pilot forecast and budget gate: the formulas, and a gated run that sends nothing beyond the pilot."""
from __future__ import annotations

import json

import pytest

from runner.core.stage import ConfigError
from runner.distill.forecast import wilson
from runner.distill.forecast_sim import simulate_wall
from runner.distill.gate import Gate
from tests.conftest import read_metrics, requires_data, run_cli
from tests.providers.openai_server import Action, LoopbackServer

_SIM = dict(fail_p=0.0, max_retries=0, backoff_base_s=0.1, backoff_max_s=1.0, rpm=None, tpm=None,
            tokens_per_request=100)


def test_wilson_interval():
    lo, hi = wilson(9, 10)
    assert lo == pytest.approx(0.5958, abs=1e-4) and hi == pytest.approx(0.9821, abs=1e-4)
    assert wilson(0, 0) == (None, None)
    lo, hi = wilson(0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0 < hi < 0.1


def test_wall_simulation_window_pacing_and_retries():
    # one worker: the latencies add up; a window wider than the requests: the slowest one
    assert simulate_wall([0.5], 10, concurrency=1, **_SIM)["p50_s"] == pytest.approx(5.0)
    assert simulate_wall([0.5], 10, concurrency=16, **_SIM)["p50_s"] == pytest.approx(0.5)
    # rpm=60 spaces starts 1 s apart whatever the concurrency
    paced = simulate_wall([0.1], 10, concurrency=16, **{**_SIM, "rpm": 60})["p50_s"]
    assert paced == pytest.approx(9.1)
    # failures add attempts (and backoff): slower than without
    fails = simulate_wall([0.5], 40, concurrency=4, **{**_SIM, "fail_p": 0.3, "max_retries": 4})
    assert fails["p50_s"] > 5.0
    # client CPU per attempt bounds the makespan from below (one event loop)
    assert simulate_wall([0.01], 100, concurrency=64, cpu_per_attempt_s=0.05, **_SIM)["p50_s"] == pytest.approx(5.0)


def test_budget_limits_validated():
    with pytest.raises(ConfigError, match="max_cost_usd"):
        Gate(max_cost_usd=-1).validate()
    with pytest.raises(ConfigError, match="pilot_size=0"):
        Gate(pilot_size=0, max_wall_s=10).validate()
    Gate(max_cost_usd=5, max_wall_s=60, min_expected_kept=10).validate()


def count_plan(prompt: str, attempt: int) -> Action:
    return Action(text="SELECT COUNT(*) FROM t")


@requires_data
def test_budget_gate_stops_before_any_non_pilot_request(tmp_path):
    with LoopbackServer(count_plan) as srv:
        proc, run_dir = run_cli(
            ["+experiment=wikisql_smoke", "trainer=none", "provider=litellm", "provider.model=openai/loopback",
             f"provider.api_base={srv.api_base}", "gate.min_gold_match_rate=0", "gate.min_judge_mean=0",
             "gate.max_wall_s=0.001"], tmp_path, timeout=300)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert srv.total == 10  # gate.pilot_size of wikisql_smoke: not one request more
    m = read_metrics(run_dir)
    assert m["status"] == "gated" and m["gate.budget_passed"] is False and m["gate.pilot_passed"] is True
    fc = json.loads((run_dir / "artifacts" / "forecast.json").read_text())
    assert fc["requests"] == 40 and m["forecast.requests"] == 40  # the 30 train + 10 eval rows left
    by = {c["check"]: c for c in fc["budget"]["checks"]}
    assert by["max_wall_s"]["status"] == "fail" and by["max_cost_usd"]["status"] == "disabled"
    # the loopback model has no price: cost null with the reason
    assert fc["cost_usd"] is None and "no price" in fc["cost_reason"]
    assert "budget gate" in proc.stdout + proc.stderr


@requires_data
def test_forecast_on_every_pilot_run_and_error_pct(tmp_path):
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", "trainer=none", "gate.min_expected_kept=1000"],
                            tmp_path / "gated", timeout=300)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["forecast.expected_kept"] < 1000 and m["teacher.requests"] == 10
    proc, run_dir = run_cli(["+experiment=wikisql_smoke", "trainer=none"], tmp_path / "ok", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run_dir)
    assert m["forecast.requests_actual"] == m["forecast.requests"] == 40
    assert m["forecast.cost_usd"] is None and m["forecast.cost_reason"].startswith("simulated")
    for k in ("tokens_in", "tokens_out", "wall_s"):
        assert isinstance(m[f"forecast.{k}_error_pct"], float)
    lo, hi = m["forecast.expected_kept_lo"], m["forecast.expected_kept_hi"]
    assert lo <= m["forecast.expected_kept"] <= hi
