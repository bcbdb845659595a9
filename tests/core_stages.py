"""Small real stages used by the core tests (not part of the product's pipelines)."""
from __future__ import annotations

import os
import time

import polars as pl

from runner.core.stage import ConfigError, Stage, check_range


class MakeRows(Stage):
    writes = ("rows",)

    def __init__(self, n: int = 10, sleep_s: float = 0.0):
        self.n, self.sleep_s = n, sleep_s

    def validate(self, ctx):
        check_range(self.name, "n", self.n, 1)

    def run(self, ctx):
        lat = []
        rows = []
        for i in range(self.n):
            t0 = time.perf_counter()
            time.sleep(self.sleep_s)
            rows.append({"i": i, "x": (i * 7919 + ctx.seed) % 101})
            lat.append(time.perf_counter() - t0)
        ctx.timer.add_items(self.n)
        ctx.timer.add_latencies(lat)
        ctx.store.write("rows", pl.DataFrame(rows))
        ctx.metrics.log("make.rows", self.n)
        # Log every env var the test marks, to prove redaction of secrets in logs.
        for k in os.environ.get("CORE_TEST_LOG_ENV", "").split(","):
            if k:
                ctx.log.info("env %s=%s", k, os.environ.get(k))


class Summarise(Stage):
    reads = ("rows",)
    writes = ("summary",)

    def __init__(self, fail: bool = False, threshold: float = 0.5):
        self.fail, self.threshold = fail, threshold

    def validate(self, ctx):
        check_range(self.name, "threshold", self.threshold, 0, 1)

    def run(self, ctx):
        if self.fail:
            raise RuntimeError("deliberate failure in summarise")
        df = ctx.store.read("rows")
        ctx.store.write("summary", df.select(pl.col("x").mean().alias("mean_x")))
        ctx.metrics.log("summary.mean_x", float(df["x"].mean()))
        ctx.timer.add_items(df.height)


class NeedsMissing(Stage):
    reads = ("never_written",)

    def run(self, ctx):  # pragma: no cover - validation stops it first
        raise AssertionError("must not run")


class RejectsConfig(Stage):
    def __init__(self, value: int = 0):
        if value < 0:
            raise ConfigError(f"rejects.value={value} must be >= 0")
        self.value = value

    def run(self, ctx):
        pass


class AlwaysGated(Stage):
    def run(self, ctx):
        from runner.core.stage import GateFailed

        raise GateFailed("too few rows passed the gate", {"min_total": {"threshold": 50, "value": 20}})
