"""The same command reports the same kind of teacher cost whether or not the cache answered."""
from __future__ import annotations

from tests.cli_tmp import metrics, run_in_tmp
from tests.conftest import requires_data

pytestmark = requires_data

# The command: the teacher only (no student), twice on one cache.
ARGS = ["+experiment=wikisql_1k", "trainer=none", "dataset.n_train=200", "dataset.n_eval=0",
        "pipeline.stages.teacher.answer_eval=false"]


def test_simulated_cost_is_null_with_its_reason_on_a_cold_and_a_warm_cache(tmp_path):
    seen = []
    for attempt in ("cold", "warm"):
        proc, run_dir = run_in_tmp(ARGS, tmp_path / attempt, cache_dir=tmp_path / "cache")
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen.append(metrics(run_dir))
    cold, warm = seen
    assert cold["teacher.cache_hits"] == 0 and cold["teacher.requests"] == 200  # requests: sent
    assert warm["teacher.cache_hits"] == 200 and warm["teacher.requests"] == 0
    for m in (cold, warm):
        assert m["teacher.cost_usd"] is None
        assert "simulated" in m["teacher.cost_reason"]
