"""Intervals and paired tests for saying whether a number, or a difference, is real.

Pure numpy + stdlib (no scipy). Method notes: /work/shared/notes/statistics.md (Wilson 1927,
McNemar 1947, Efron & Tibshirani 1993 for the bootstrap, Dietterich 1998 for paired tests).

Conventions (for metrics.json, the run summary and runner.report):

- A 95 % interval is stored next to its value as ONE key, `<key>_ci95` = [lo, hi] (a JSON list of
  two floats, both null-free), e.g. `student_post.gold_match_rate` = 0.449 and
  `student_post.gold_match_rate_ci95` = [0.418, 0.480]. Not flat `_lo`/`_hi` keys: one key keeps
  the pair together through metric globs and renames. A rate measured on no rows has value null
  and `_ci95` null. Use `rate_with_ci(metrics, key, k, n)` to log both.
- Rates over n rows use the Wilson score interval (`wilson`): it stays inside [0, 1] and is
  honest at k = 0 or k = n, where the normal approximation collapses to a point.
- Means of bounded scores (judge means) use a t-interval (`mean_ci`), or a bootstrap on request.
- Two runs on the same eval rows are compared row by row (`paired_compare`): difference B - A,
  its paired-bootstrap 95 % interval (rows resampled with the same indices for both runs, 2,000
  resamples, fixed seed) and, for a binary outcome, the exact McNemar p-value.
- Several seeds of one setting: `seed_summary` (mean, sd, n, t-interval over seeds).
- Printing: `fmt_ci(value, lo, hi)` writes "0.449 ± 0.031" (half-width) when the interval is
  symmetric to the printed precision (t-intervals, Wilson away from 0 and 1), else
  "0.004 [0.000, 0.012]": an asymmetric interval (Wilson near 0 or 1, bootstraps of skewed
  differences) is never squeezed into a symmetric ± that would cross 0 or 1.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # standard normal 0.975 quantile
N_BOOT = 2000


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the rate k/n. n = 0: (0, 1), nothing is known."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp rounding only (the exact bounds are within [0, 1]): k = 0 gives centre - half ~ -1e-19.
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_ci(metrics: Any, key: str, k: int, n: int) -> tuple[float | None, list[float] | None]:
    """Log `key` = k/n and `key_ci95` = [lo, hi] (Wilson) on a runner.core.metrics.Metrics (or a dict).
    n = 0: both null (not measured, not 0). Returns (rate, [lo, hi])."""
    rate = k / n if n else None
    ci = list(wilson(k, n)) if n else None
    for name, value in ((key, rate), (f"{key}_ci95", ci)):
        if hasattr(metrics, "log"):
            metrics.log(name, value)
        else:
            metrics[name] = value
    return rate, ci


# --- Student t quantile (no scipy) -------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (Numerical Recipes, modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on t_cdf; ~1e-12 accurate). t_ppf(0.975, 1) = 12.706."""
    if not 0.0 < q < 1.0 or df <= 0:
        raise ValueError(f"t_ppf: need 0 < q < 1 and df > 0, got q={q}, df={df}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


# --- means -------------------------------------------------------------------------------------
def _floats(values: Sequence[Any]) -> np.ndarray:
    """Values as floats, None/NaN dropped (an unmeasured row or seed is not a 0)."""
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return arr[~np.isnan(arr)]


def _percentile_ci(stats: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def _boot_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of n_boot resamples of x (rows drawn with replacement), in chunks to bound memory."""
    rng, n, out = np.random.default_rng(seed), len(x), []
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        out.append(x[idx].mean(axis=1))
    return np.concatenate(out)


def mean_ci(values: Sequence[Any], level: float = 0.95, method: str = "t", n_boot: int = N_BOOT,
            seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """(mean, lo, hi): t-interval mean ± t(1-α/2, n-1)·sd/√n, or method="bootstrap" (percentile).
    None/NaN values are dropped; no values: all None; one value: (mean, None, None)."""
    x = _floats(values)
    if len(x) == 0:
        return None, None, None
    mean = float(x.mean())
    if len(x) == 1:
        return mean, None, None
    if method == "t":
        half = t_ppf(1.0 - (1.0 - level) / 2.0, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
        return mean, mean - half, mean + half
    if method == "bootstrap":
        return (mean, *_percentile_ci(_boot_means(x, n_boot, seed), level))
    raise ValueError(f"mean_ci: method must be 't' or 'bootstrap', got {method!r}")


def seed_summary(values: Sequence[Any], level: float = 0.95) -> dict[str, Any]:
    """Over seeds of one setting: mean, sd (n-1), n and the t-interval (lo, hi). Two seeds give a
    wide interval (t = 12.7), which is honest. One seed: sd, lo, hi None."""
    x = _floats(values)
    mean, lo, hi = mean_ci(x, level)
    return {"mean": mean, "sd": float(x.std(ddof=1)) if len(x) > 1 else None, "n": int(len(x)), "lo": lo, "hi": hi}


# --- paired comparison -------------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: min(1, 2·P(X <= min(b, c))), X ~ Binomial(b + c, 1/2).
    b, c: the discordant counts (A right B wrong, A wrong B right). b + c = 0: p = 1."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int: correctly rounded even for large n


def paired_bootstrap(a: Sequence[Any], b: Sequence[Any], n_boot: int = N_BOOT, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(diff, lo, hi) of mean(b - a) over paired rows: resample rows with the same indices for both
    runs, take the percentile interval of the resampled mean differences."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"paired_bootstrap: need two equal-length non-empty rows, got {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("paired_bootstrap: rows hold NaN (drop unmeasured rows from both runs first)")
    d = y - x
    return (float(d.mean()), *_percentile_ci(_boot_means(d, n_boot, seed), level))


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def paired_compare(a: Sequence[Any], b: Sequence[Any], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """A vs B on the same rows (same order): n, a_mean, b_mean, diff (= b_mean - a_mean), lo, hi
    (paired bootstrap 95 %); for binary rows also a_only (A right, B wrong), b_only (A wrong,
    B right) and p_mcnemar; for real-valued rows those three are None."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff, lo, hi = paired_bootstrap(x, y, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"n": int(len(x)), "a_mean": float(x.mean()), "b_mean": float(y.mean()),
                           "diff": diff, "lo": lo, "hi": hi, "a_only": None, "b_only": None, "p_mcnemar": None}
    if _is_binary(x) and _is_binary(y):
        a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        out.update(a_only=a_only, b_only=b_only, p_mcnemar=mcnemar_exact(a_only, b_only))
    return out


def fmt_ci(value: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """"0.449 ± 0.031" when the interval is symmetric to the printed precision, else
    "0.004 [0.000, 0.012]"; a missing interval prints the value alone, a missing value ""."""
    if value is None:
        return ""
    if lo is None or hi is None:
        return f"{value:.{digits}f}"
    below, above = value - lo, hi - value
    if abs(below - above) <= 0.5 * 10**-digits:
        return f"{value:.{digits}f} ± {(below + above) / 2:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
