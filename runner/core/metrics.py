"""Metrics recorder and stage timer: the numbers behind metrics.json and timing.json."""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


def _clean(value: Any) -> Any:
    """JSON-safe scalar; NaN/inf become None (JSON has no NaN; null means 'not measured')."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Metrics:
    """A flat dict of `<scope>.<metric>` keys. Later writes overwrite earlier ones."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def log(self, key: str, value: Any) -> None:
        self._data[key] = _clean(value)

    def update(self, prefix: str, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.log(f"{prefix}.{k}" if prefix else k, v)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list (q in [0, 100])."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary(latencies: list[float]) -> dict[str, float] | None:
    if not latencies:
        return None
    s = sorted(latencies)
    return {"p50": percentile(s, 50), "p90": percentile(s, 90), "p95": percentile(s, 95), "max": s[-1],
            "n": len(s)}


@dataclass
class StageTiming:
    wall_s: float = 0.0
    items: int | None = None
    latencies: list[float] = field(default_factory=list)


class Timer:
    """Wall time per stage, items processed, and per-item latencies where a stage has them."""

    def __init__(self) -> None:
        self.stages: dict[str, StageTiming] = {}
        self._current: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[StageTiming]:
        timing = self.stages.setdefault(name, StageTiming())
        prev, self._current = self._current, name
        t0 = time.perf_counter()
        try:
            yield timing
        finally:
            timing.wall_s += time.perf_counter() - t0
            self._current = prev

    def _timing(self, stage: str | None) -> StageTiming:
        name = stage or self._current
        if name is None:
            raise RuntimeError("no stage is running; pass stage=")
        return self.stages.setdefault(name, StageTiming())

    def add_items(self, n: int, stage: str | None = None) -> None:
        t = self._timing(stage)
        t.items = (t.items or 0) + int(n)

    def add_latencies(self, values: list[float], stage: str | None = None) -> None:
        self._timing(stage).latencies.extend(float(v) for v in values)

    def report(self, total_wall_s: float, samples: float | None) -> dict[str, Any]:
        stages = {}
        for name, t in self.stages.items():
            entry: dict[str, Any] = {
                "wall_s": round(t.wall_s, 6),
                "share": round(t.wall_s / total_wall_s, 6) if total_wall_s > 0 else None,
                "items": t.items,
                "items_per_s": (round(t.items / t.wall_s, 3) if t.items and t.wall_s > 0 else None),
            }
            lat = latency_summary(t.latencies)
            if lat is not None:
                entry["latency"] = {k: round(v, 6) for k, v in lat.items()}
            stages[name] = entry
        return {
            "stages": stages,
            "total_wall_s": round(total_wall_s, 6),
            "samples": samples,
            "samples_per_hour": samples_per_hour(samples, total_wall_s),
        }


def samples_per_hour(samples: float | None, wall_s: float) -> float | None:
    if samples is None or wall_s <= 0:
        return None
    return round(samples / wall_s * 3600.0, 3)
