"""The simulated teacher: built from its real YAML, seeded, with the documented error model."""
from __future__ import annotations

import json
import re
import sqlite3
import statistics
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner.core.stage import ConfigError
from runner.engine import Request, generate
from runner.text2sql.simulated import SimulatedProvider, perturbed_sql
from runner.text2sql.sql import render_sql

YAML = Path(__file__).resolve().parents[2] / "conf" / "provider" / "simulated.yaml"
FAST = {"latency_median_s": 0.0, "latency_p95_s": 0.0, "rate_429": 0.0, "rate_5xx": 0.0, "rate_timeout": 0.0}


def simulated(**overrides) -> SimulatedProvider:
    cfg = OmegaConf.load(YAML)
    cfg.merge_with({"sim_seed": 0, "cache": False, **FAST, **overrides})
    return instantiate(cfg)


COLUMNS, TYPES = ["Player", "No.", "Team", "Year"], ["text", "real", "text", "real"]
ROWS = [("Larry Bird", 33, "Boston Celtics", 1979), ("Magic Johnson", 32, "Los Angeles Lakers", 1979),
        ("Kevin McHale", 32, "Boston Celtics", 1980), ("Robert Parish", 0, "Boston Celtics", 1976)]


def text2sql_meta(i: int) -> dict:
    sel, agg, conds = [(0, 0, [[2, 0, "Los Angeles Lakers"]]), (1, 0, [[0, 0, "Larry Bird"]]),
                       (2, 0, [[3, 0, 1976]]), (0, 3, [[2, 0, "Boston Celtics"]])][i % 4]
    return {"task": "text2sql", "table": "table_1", "columns": COLUMNS, "types": TYPES, "sel": sel, "agg": agg,
            "conds": conds, "gold_sql": render_sql("table_1", COLUMNS, TYPES, sel, agg, conds)}


def text2sql_requests(n: int) -> list[Request]:
    return [Request(id=str(i), messages=[{"role": "user", "content": f"question {i}"}], meta=text2sql_meta(i))
            for i in range(n)]


def clean(text: str) -> str:
    """A minimal stand-in for the team's cleaner (the provider must not depend on it)."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S)
    fence = re.search(r"```sql\n(.*?)\n```", text, re.S)
    if fence:
        return fence.group(1)
    start = text.find("SELECT")
    return text[start:].split("\n")[0] if start >= 0 else ""


def execute(db: sqlite3.Connection, sql: str):
    try:
        return sorted(db.execute(sql).fetchall())
    except sqlite3.Error:
        return None


def test_quality_close_to_configured_error_model(tmp_path):
    n = 1200
    reqs = text2sql_requests(n)
    texts = [r.text for r in generate(simulated(), reqs, cache_dir=tmp_path, progress=False).responses]
    db = sqlite3.connect(":memory:")
    db.execute('CREATE TABLE table_1 ("Player" TEXT, "No." REAL, "Team" TEXT, "Year" REAL)')
    db.executemany("INSERT INTO table_1 VALUES (?, ?, ?, ?)", ROWS)
    exec_ok = gold = 0
    for req, text in zip(reqs, texts):
        got = execute(db, clean(text)) if clean(text) else None
        exec_ok += got is not None
        gold += got is not None and got == execute(db, req.meta["gold_sql"])
    # YAML: exec ~= 0.98 * 0.95 = 0.931; gold ~= 0.931 * 0.78 * 0.78 * 0.75 = 0.425 + accidental matches.
    assert abs(exec_ok / n - 0.931) < 0.03
    assert 0.40 < gold / n < 0.52
    fenced = sum("```sql" in t for t in texts) / n
    thinking = sum(t.startswith("<think>") for t in texts) / n
    assert abs(fenced - 0.35 * 0.98) < 0.05 and abs(thinking - 0.10 * 0.98) < 0.03
    assert abs(sum(t == "" for t in texts) / n - 0.02) < 0.015


def test_deterministic_per_seed_and_request(tmp_path):
    reqs = text2sql_requests(50)
    a = [r.text for r in generate(simulated(), reqs, cache_dir=tmp_path, progress=False).responses]
    b = [r.text for r in generate(simulated(), list(reversed(reqs)), cache_dir=tmp_path,
                                  progress=False).responses]
    c = [r.text for r in generate(simulated(sim_seed=1), reqs, cache_dir=tmp_path, progress=False).responses]
    assert a == list(reversed(b))  # depends on the request, not on its position
    assert a != c


def test_perturbations_change_the_query():
    import random

    meta = text2sql_meta(0)
    rng = random.Random(0)
    assert perturbed_sql(meta, rng, 0, 0, 0) == meta["gold_sql"]
    wrong_col = perturbed_sql(meta, rng, 1, 0, 0)
    wrong_agg = perturbed_sql(meta, rng, 0, 1, 0)
    wrong_lit = perturbed_sql(meta, rng, 0, 0, 1)
    assert '"Player"' not in wrong_col.split(" FROM ")[0]
    assert wrong_agg.startswith('SELECT COUNT("Player")')
    literal = wrong_lit.split("= ")[1]
    key = lambda s: re.sub(r"\W", "", s.lower())  # noqa: E731 - the executor's case/punctuation-blind key
    assert key(literal) != key("'Los Angeles Lakers'")


def test_judge_scores_are_strict_json_and_correlated(tmp_path):
    truth = [1.0, 0.5, 0.0] * 100
    reqs = [Request(id=str(i), messages=[{"role": "user", "content": f"judge {i}"}],
                    meta={"task": "judge", "correct": c}) for i, c in enumerate(truth)]
    scores = [json.loads(r.text)["score"] for r in generate(simulated(), reqs, cache_dir=tmp_path,
                                                            progress=False).responses]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert statistics.correlation(truth, scores) > 0.8
    assert statistics.mean(s for s, t in zip(scores, truth) if t == 1.0) > 0.85


def test_yesno_error_rate(tmp_path):
    reqs = [Request(id=str(i), messages=[{"role": "user", "content": f"yn {i}"}],
                    meta={"task": "yesno", "answer": i % 2 == 0}) for i in range(1000)]
    out = generate(simulated(yesno_error_rate=0.2), reqs, cache_dir=tmp_path, progress=False).responses
    wrong = sum((r.text == "yes") != req.meta["answer"] for r, req in zip(out, reqs))
    assert all(r.text in ("yes", "no") for r in out) and abs(wrong / 1000 - 0.2) < 0.04


def test_faults_go_through_engine_retries(tmp_path):
    p = simulated(rate_429=0.2, rate_5xx=0.1, rate_timeout=0.1, retry_after_s=0.0, max_retries=8,
                  backoff_base_s=0.0)
    res = generate(p, text2sql_requests(300), cache_dir=tmp_path, progress=False)
    assert res.stats["errors"] == 0
    retries = res.stats["attempts"] - res.stats["requests"]
    assert 0.3 < retries / res.stats["attempts"] < 0.5  # 40% of attempts fail


def test_latency_model_median_and_p95(tmp_path):
    import random

    p = simulated(latency_median_s=1.0, latency_p95_s=3.0)
    draws = sorted(p.sample_latency(random.Random(i)) for i in range(4000))
    assert abs(draws[2000] - 1.0) < 0.08 and abs(draws[3800] - 3.0) < 0.35


def test_unknown_task_is_a_recorded_error(tmp_path):
    res = generate(simulated(), [Request(id="x", messages=[{"role": "user", "content": "?"}])],
                   cache_dir=tmp_path, progress=False)
    assert res.responses[0].error_kind == "bad_request" and "meta['task']" in res.responses[0].error


def test_kind_is_labelled_simulated():
    assert simulated().kind == "simulated"


def test_cost_is_null_with_a_reason_and_tokens_come_from_a_named_tokenizer(tmp_path):
    from runner.text2sql.prompt import token_counter

    provider = simulated()
    res = generate(provider, text2sql_requests(4), cache_dir=tmp_path, progress=False)
    assert all(r.cost_usd is None for r in res.responses)  # nobody is paid: never a silent 0.0
    assert res.stats["cost_usd"] is None and "simulated" in provider.cost_reason()
    count, name = token_counter()
    assert count is not None, name  # tiktoken ships with the project's dependencies
    assert [r.tokens_out for r in res.responses] == [count(r.text) for r in res.responses]
    assert provider.token_counter.startswith("tiktoken cl100k_base")
    assert "setup_s" in res.stats and res.stats["setup_s"] >= 0
    assert provider.notices() and "SIMULATED" in provider.notices()[0]


@pytest.mark.parametrize("bad, match", [({"fence_rate": 1.5}, "fence_rate"),
                                        ({"latency_median_s": 2.0, "latency_p95_s": 1.0}, "latency_p95_s"),
                                        ({"rate_429": 0.6, "rate_5xx": 0.5}, "rate_429")])
def test_validate_rejects_bad_knobs(bad, match):
    with pytest.raises(ConfigError, match=match):
        simulated(**bad).validate()
