"""runner.core.stats against hand-computed values (each computation written beside its assertion)."""
from __future__ import annotations

import numpy as np
import pytest

from runner.core.metrics import Metrics
from runner.core.stats import (
    fmt_ci,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap,
    paired_compare,
    rate_with_ci,
    seed_summary,
    t_ppf,
    wilson,
)


def test_wilson_hand_computed():
    # k=5, n=10, z=1.96: p=0.5, z²/n=0.38416, centre=(0.5+0.19208)/1.38416=0.5,
    # half=1.96·sqrt(0.025+3.8416/400)/1.38416=1.96·0.186021/1.38416=0.263410 -> [0.236590, 0.763410]
    lo, hi = wilson(5, 10, z=1.96)
    assert lo == pytest.approx(0.236590, abs=1e-6) and hi == pytest.approx(0.763410, abs=1e-6)
    # k=0, n=997: centre = half = (z²/2n)/(1+z²/n) = 0.0019266/1.0038532 -> [0, 0.0038383] (notes: [0, 0.0038])
    lo, hi = wilson(0, 997)
    assert lo == 0.0 and hi == pytest.approx(0.0038383, abs=1e-6)
    # k=n mirrors k=0; the interval always holds p̂ and stays in [0, 1]
    lo, hi = wilson(997, 997)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.0038383, abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_mcnemar_exact_hand_computed():
    # b=1, c=5: X~Bin(6, 1/2), P(X<=1) = (C(6,0)+C(6,1))/64 = 7/64, p = 2·7/64 = 0.21875
    assert mcnemar_exact(1, 5) == pytest.approx(0.21875)
    assert mcnemar_exact(5, 1) == pytest.approx(0.21875)  # symmetric in b and c
    # b=0, c=6: P(X<=0) = 1/64, p = 2/64 = 0.03125
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125)
    # b=c: P(X<=3 | n=6) = 42/64 > 1/2, capped at 1; no discordant rows: 1
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # b=40, c=60: 2·P(X<=40 | n=100) = 0.056888 (scipy.stats.binomtest(40, 100).pvalue)
    assert mcnemar_exact(40, 60) == pytest.approx(0.0568879336, rel=1e-8)


def test_t_quantiles_match_the_table():
    # Student t 0.975 quantiles from any table: df=1 12.706, df=4 2.776, df=30 2.042
    assert t_ppf(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_ppf(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_ppf(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    assert t_ppf(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)


def test_mean_ci_and_seed_summary():
    # 1..5: mean 3, sd sqrt(2.5)=1.581139, half = 2.776445·1.581139/sqrt(5) = 1.963243
    mean, lo, hi = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0 and lo == pytest.approx(3 - 1.963243, abs=1e-6) and hi == pytest.approx(3 + 1.963243, abs=1e-6)
    # bootstrap: inside the data range, around the mean
    mean, lo, hi = mean_ci([1, 2, 3, 4, 5], method="bootstrap")
    assert 1 <= lo < 3 < hi <= 5
    # unmeasured values are dropped, not counted as 0
    assert mean_ci([None, 2.0, float("nan"), 4.0])[0] == 3.0
    assert mean_ci([7.0]) == (7.0, None, None) and mean_ci([]) == (None, None, None)
    # two seeds 0.4, 0.5: sd = 0.0707107, half = 12.7062·0.0707107/sqrt(2) = 0.635310
    s = seed_summary([0.4, 0.5])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.45) and s["sd"] == pytest.approx(0.0707107, abs=1e-6)
    assert s["hi"] - s["mean"] == pytest.approx(0.635310, abs=1e-5)
    assert seed_summary([0.3]) == {"mean": 0.3, "sd": None, "n": 1, "lo": None, "hi": None}


def test_paired_bootstrap_known_cases():
    # identical runs: every resample's difference is 0
    assert paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1]) == (0.0, 0.0, 0.0)
    # a constant shift of 0.25 on every row: every resample's difference is 0.25
    diff, lo, hi = paired_bootstrap([0.1, 0.5, 0.7], [0.35, 0.75, 0.95])
    assert (diff, lo, hi) == pytest.approx((0.25, 0.25, 0.25))
    # B right on 30 more of 200 rows, disagreeing on 30 rows only: diff = 30/200 = 0.15,
    # SE = sqrt(var(d)/n) with d in {0 x170, 1 x30}: sqrt(0.15·0.85/200) = 0.02525 -> ±0.0495
    a = np.zeros(200)
    b = np.r_[np.ones(30), np.zeros(170)]
    diff, lo, hi = paired_bootstrap(a, b, seed=0)
    assert diff == pytest.approx(0.15) and lo == pytest.approx(0.15 - 0.0495, abs=0.012)
    assert hi == pytest.approx(0.15 + 0.0495, abs=0.012) and lo > 0
    assert paired_bootstrap(a, b, seed=0) == (diff, lo, hi)  # fixed seed: reproducible
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_paired_compare_counts_discordant_rows():
    # A right on rows 0-3, B right on rows 2-7 (n=10): a_only = {0,1} = 2, b_only = {4..7} = 4,
    # diff = (4-2)/10 = 0.2, p = 2·P(X<=2 | n=6) = 2·22/64 = 0.6875
    a = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    b = [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    r = paired_compare(a, b)
    assert (r["n"], r["a_only"], r["b_only"]) == (10, 2, 4)
    assert r["diff"] == pytest.approx(0.2) and r["p_mcnemar"] == pytest.approx(0.6875)
    assert r["a_mean"] == 0.4 and r["b_mean"] == pytest.approx(0.6) and r["lo"] <= 0.2 <= r["hi"]
    real = paired_compare([0.5, 0.25], [1.0, 0.5])  # judge-like scores: no McNemar
    assert real["p_mcnemar"] is None and real["diff"] == pytest.approx(0.375)


def test_fmt_ci_and_rate_with_ci():
    assert fmt_ci(0.449, 0.418, 0.480) == "0.449 ± 0.031"
    assert fmt_ci(0.0, 0.0, 0.0038383) == "0.000 [0.000, 0.004]"  # asymmetric: never "0.000 ± 0.002"
    assert fmt_ci(0.5, None, None) == "0.500" and fmt_ci(None, None, None) == ""
    m = Metrics()
    rate, ci = rate_with_ci(m, "student_post.gold_match_rate", 5, 10)
    assert m.get("student_post.gold_match_rate") == 0.5 and rate == 0.5
    assert m.get("student_post.gold_match_rate_ci95") == pytest.approx([0.2366, 0.7634], abs=1e-4) == ci
    d: dict = {}
    rate_with_ci(d, "x.rate", 0, 0)
    assert d == {"x.rate": None, "x.rate_ci95": None}
