"""Best-of-n with execution voting: the pick rule, and end to end against the loopback server."""
from __future__ import annotations

import re

import polars as pl
import pytest

from runner.distill.vote import pick, result_key
from tests.conftest import read_metrics, requires_data, run_cli
from tests.providers.openai_server import Action, LoopbackServer


def test_pick_majority_ties_and_nothing_executing():
    a, b = result_key('[["x"]]'), result_key('[["y"]]')
    assert pick([a, b, a, None, a], ["s1", "s2", "s3", "", "s"]) == (4, 0.6, [])  # shortest SQL of the group
    # 2 vs 2: returned as a tie, then broken by the judge score, then by the shortest SQL
    assert pick([a, b, a, b], ["aa", "b", "aaa", "bb"])[2] == [0, 1, 2, 3]
    assert pick([a, b, a, b], ["aa", "b", "aaa", "bb"], {0: 0.2, 1: 0.9, 2: 0.2, 3: 0.9})[0] == 1
    assert pick([a, b, a, b], ["aa", "b", "aaa", "bb"], {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5})[0] == 1
    assert pick([None, None], ["x", "y"]) == (-1, None, [])
    # results compare as multisets of normalised values: row order and 1 vs 1.0 do not matter
    assert result_key('[[1], ["A b"]]') == result_key('[["a b"], [1.0]]')


_COLS = re.compile(r'CREATE TABLE t \("([^"]+)"')


def voting_plan(prompt: str, attempt: int, body: dict):
    """Samples 2, 3, 4 (seed 2..4) select the first column; samples 0 and 1 give other results."""
    col = _COLS.search(prompt).group(1)
    sample = int(body.get("seed") or 0)
    text = {0: "SELECT COUNT(*) FROM t", 1: f'SELECT MAX("{col}") || \'?\' FROM t'}.get(
        sample, f'SELECT "{col}" FROM t')
    return Action(text=text)


def _loopback_args(srv, n: int) -> list[str]:
    return ["+experiment=wikisql_smoke", "trainer=none", "gate=off", "provider=litellm",
            "provider.model=openai/loopback", f"provider.api_base={srv.api_base}", "provider.temperature=0.7",
            "provider.backoff_base_s=0.01", f"provider.n={n}", "dataset.n_train=12", "dataset.n_eval=4"]


@requires_data
def test_n5_keeps_the_voted_answer_and_raising_n_pays_only_new_samples(tmp_path):
    cache = tmp_path / "cache"
    with LoopbackServer(voting_plan) as srv:
        proc, run3 = run_cli(_loopback_args(srv, 3), tmp_path / "n3", cache_dir=cache, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        rows = len(srv.counts)
        assert rows == 16 and set(srv.counts.values()) == {3}
        proc, run5 = run_cli(_loopback_args(srv, 5), tmp_path / "n5", cache_dir=cache, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # n 3 -> 5: only samples 3 and 4 of each row were sent
        assert set(srv.counts.values()) == {5}
    m3, m5 = read_metrics(run3), read_metrics(run5)
    assert m3["teacher.requests"] == 3 * rows
    assert m5["teacher.requests"] == 2 * rows and m5["teacher.cache_hits"] == 3 * rows
    raw = pl.read_parquet(run5 / "artifacts" / "teacher_raw.parquet")
    assert raw["vote_sample"].to_list() == [2] * rows  # the 3-of-5 answer; identical texts: the first
    assert all(g.startswith('SELECT "') and "COUNT" not in g for g in raw["generation"].to_list())
    assert m5["teacher.vote_n"] == 5 and m5["teacher.vote_agreement"] == pytest.approx(0.6)
    assert m5["teacher.vote_changed_rate"] == 1.0
    # sample 0 (COUNT(*)) differs from the vote; the n=3 run had no majority for it either
    assert m3["teacher.vote_agreement"] == pytest.approx(1 / 3)
