"""The run: build and validate the pipeline, run it, write metrics.json / timing.json, summarise.

Exit codes of a single run: 0 ok, 1 failed, 3 gated. In a multirun a failed or gated job
records its status and returns, so the other jobs go on.
"""
from __future__ import annotations

import logging
import random
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner import pipeline, tracking
from runner.artifacts import atomic_write_json
from runner.context import RunContext
from runner.metrics import samples_per_hour
from runner.runinfo import run_info
from runner.secrets import api_key_env_names, install_redaction
from runner.stage import ConfigError, GateFailed

log = logging.getLogger("runner")

EXIT_OK, EXIT_FAILED, EXIT_GATED = 0, 1, 3


@dataclass
class RunResult:
    status: str
    metrics: dict[str, Any]
    exit_code: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    if "torch" in sys.modules:  # seed torch only if a stage module already imported it
        sys.modules["torch"].manual_seed(seed)


def execute(cfg: DictConfig, run_dir: Path, *, experiment: str = "default") -> RunResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    install_redaction(api_key_env_names(cfg))
    started, t0 = _now(), time.perf_counter()
    pcfg = cfg.pipeline
    ctx = RunContext.create(run_dir, seed=cfg.seed, cache_dir=cfg.get("cache_dir"), experiment=experiment,
                            reuse_from=list(pcfg.get("reuse_from") or []), logger=log)
    seed_everything(ctx.seed)
    status, error, code, tracker = "ok", None, EXIT_OK, None
    try:
        tracker = tracking.build(cfg.get("logger"))  # logger=none: None; a missing package fails here
        planned = pipeline.build(pcfg)
        pipeline.validate(planned, ctx)
        ctx.store.write_json("pipeline.json", pipeline.describe(planned))
        log.info("run folder: %s", run_dir)
        log.info("pipeline: %s", " -> ".join(p.name for p in planned))
        pipeline.run(planned, ctx)
    except GateFailed as e:
        status, error, code = "gated", str(e), EXIT_GATED
        log.error("gated: %s", e)
    except ConfigError as e:
        status, error, code = "failed", f"config error: {e}", EXIT_FAILED
        log.error("config error: %s", e)
    except Exception as e:  # noqa: BLE001 - any stage failure becomes status=failed
        status, error, code = "failed", f"{type(e).__name__}: {e}", EXIT_FAILED
        log.error("stage %s failed: %s\n%s", ctx.stage, error, traceback.format_exc())
    wall = time.perf_counter() - t0
    m = ctx.metrics
    samples_key = pcfg.get("samples_metric")
    samples = m.get(samples_key) if samples_key else None
    m.log("status", status)
    if error:
        m.log("error", error)
        if ctx.stage:
            m.log("failed_stage", ctx.stage)
    m.log("experiment", experiment)
    m.log("seed", ctx.seed)
    m.log("run.wall_s", round(wall, 6))
    m.log("run.samples", samples)
    m.log("run.samples_per_hour", samples_per_hour(samples, wall))
    m.log("run.started_at", started)
    m.log("run.ended_at", _now())
    for k, v in run_info().items():
        m.log(k, v)
    metrics = m.as_dict()
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_json(run_dir / "timing.json", ctx.timer.report(wall, samples))
    if tracker is not None:
        tracker.log_run(run_dir, metrics)
    try:
        from runner.summary import print_summary

        print_summary(metrics, ctx.timer.report(wall, samples), run_dir)
    except Exception as e:  # noqa: BLE001 - a summary must never turn a good run into a failure
        log.warning("could not print summary: %s", e)
    return RunResult(status, metrics, code)


def optimized_value(cfg: DictConfig, result: RunResult) -> float | None:
    key = cfg.get("optimized_metric")
    if not key:
        return None
    value = result.metrics.get(key)
    if result.status != "ok" or value is None:
        return float("nan")
    return float(value)


def config_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)
