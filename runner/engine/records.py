"""Per-request records and run totals of one generate() call (GenerationResult.stats, the frame)."""
from __future__ import annotations

from typing import Any

import polars as pl

from runner.engine.types import Response


def _sum_or_none(values: list[Any]) -> Any:
    return None if any(v is None for v in values) else sum(values)


def run_stats(responses: list[Response | None], cache_hits: int, jobs: list[Any], attempts: int,
              wall_s: float) -> dict[str, Any]:
    first_rows = {j.rows[0] for j in jobs}
    fresh = [r for i, r in enumerate(responses) if i in first_rows and r is not None and r.error is None]
    latencies = sorted(r.latency_s for r in fresh if r.latency_s is not None)
    return {
        "total": len(responses),
        "cache_hits": cache_hits,
        "deduplicated": sum(len(j.rows) - 1 for j in jobs),
        "requests": len(jobs),
        "attempts": attempts,
        "errors": sum(1 for r in responses if r is not None and r.error is not None),
        "tokens_in": _sum_or_none([r.tokens_in for r in fresh]),
        "tokens_out": _sum_or_none([r.tokens_out for r in fresh]),
        "cost_usd": _sum_or_none([r.cost_usd for r in fresh]),
        "wall_s": wall_s,
        "latency_p50_s": _quantile(latencies, 0.5),
        "latency_p95_s": _quantile(latencies, 0.95),
    }


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


_FRAME_SCHEMA = {"id": pl.String, "text": pl.String, "latency_s": pl.Float64, "tokens_in": pl.Int64,
                 "tokens_out": pl.Int64, "cost_usd": pl.Float64, "attempts": pl.Int64,
                 "cache_hit": pl.Boolean, "error": pl.String, "error_kind": pl.String}


def responses_frame(responses: list[Response]) -> pl.DataFrame:
    """Per-request records as a DataFrame (the columns of a generation artifact)."""
    return pl.DataFrame({k: [getattr(r, k) for r in responses] for k in _FRAME_SCHEMA}, schema=_FRAME_SCHEMA)
