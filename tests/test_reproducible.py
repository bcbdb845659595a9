"""Same command, same seed, same numbers: two runs of the smoke job with a student give identical
metrics.json values, timings and timestamps aside. Nothing may depend on how busy the machine is
(a wall budget that decides the step count did: train.stopped_by says when it happens)."""
from __future__ import annotations

import re

import pytest

from tests.cli_tmp import metrics, run_in_tmp
from tests.conftest import requires_data

pytestmark = requires_data

# As the README writes it, with size overrides only: a few training steps, short answers.
ARGS = ["+experiment=wikisql_smoke", "student.size=tiny", "trainer.torch.max_steps=6",
        "pipeline.stages.student_pre.max_new_tokens=8", "pipeline.stages.student_post.max_new_tokens=8"]
# Measured durations, rates per second, memory, dates and hosts: everything else must be equal.
VOLATILE = re.compile(r"(_s$|_s_|per_s|per_hour|latency|wall|started_at|ended_at|rss|memory|^run\.|^version\."
                      r"|elapsed|speedup|_ms$|host|pid|gflops|threads|accuracy_per_mb)")


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_the_same_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        # separate caches: the second run recomputes everything rather than reading the first's answers
        proc, run_dir = run_in_tmp(ARGS, tmp_path / name, cache_dir=tmp_path / name / "cache")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(metrics(run_dir))
    a, b = runs
    assert a["train.steps"] == 6 and a["train.stopped_by"] == "steps"
    stable = sorted(k for k in a if not VOLATILE.search(k))
    assert len(stable) > 100  # the comparison covers the run, not a handful of keys
    assert set(stable) <= set(b)
    diff = {k: (a[k], b[k]) for k in stable if a[k] != b[k]}
    assert not diff, diff
    assert a["train.final_loss"] == b["train.final_loss"] and a["student_post.gold_match_rate"] is not None
