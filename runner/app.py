"""The run: build and validate the pipeline, run it, write metrics.json / timing.json, summarise.

Exit codes of a single run: 0 ok, 1 failed, 3 gated, 130 interrupted (SIGINT/SIGTERM). In a
multirun a failed or gated job records its status and returns, so the other jobs go on; an
interrupted one stops the sweep.
"""
from __future__ import annotations

import logging
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner import pipeline, tracking
from runner.core.artifacts import atomic_write_json
from runner.core.console import quiet_third_party
from runner.core.context import RunContext
from runner.core.metrics import samples_per_hour
from runner.core.runinfo import run_info
from runner.core.secrets import (
    api_key_env_names,
    install_redaction,
    redact,
    secret_values,
)
from runner.core.stage import ConfigError, GateFailed, StageFailed
from runner.engine.cache_config import configure_cache

log = logging.getLogger("runner")

EXIT_OK, EXIT_FAILED, EXIT_GATED, EXIT_INTERRUPTED = 0, 1, 3, 130


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so both unwind the same way."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Interrupted("SIGTERM")


def _parse_seed(value: Any) -> tuple[int, ConfigError | None]:
    """`seed=abc` becomes a config error of the run (metrics.json written), not a traceback."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value), None
    return 0, ConfigError(f"seed={value!r} must be an integer, e.g. seed=3")


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
    seed, seed_error = _parse_seed(cfg.get("seed"))
    ctx = RunContext.create(run_dir, seed=seed, cache_dir=cfg.get("cache_dir"), experiment=experiment,
                            reuse_from=list(pcfg.get("reuse_from") or []), logger=log)
    seed_everything(ctx.seed)
    status, error, code, tracker, failed_stage = "ok", None, EXIT_OK, None, None
    prev_term = _install(signal.SIGTERM, _on_sigterm)
    try:
        if seed_error is not None:
            ctx.extras["seed"] = cfg.get("seed")  # logged as given
            raise seed_error
        configure_cache(cfg.get("cache"), ctx.cache_dir)  # backend, and refuse SQLite on a shared network FS
        tracker = tracking.build(cfg.get("logger"))  # logger=none: None; a missing package fails here
        planned = pipeline.build(pcfg)
        quiet_third_party(type(p.stage).__module__ for p in planned)
        pipeline.validate(planned, ctx, notes=list(pcfg.get("notes") or []))
        ctx.store.write_json("pipeline.json", pipeline.describe(planned))
        log.info("run folder: %s", run_dir)
        log.info("pipeline: %s", " -> ".join(p.name for p in planned))
        pipeline.run(planned, ctx)
    except GateFailed as e:
        status, error, code = "gated", str(e), EXIT_GATED
        log.error("gated: %s", e)
    except ConfigError as e:
        # The stage whose settings were being validated (pipeline.validate sets it), else "config".
        failed_stage = getattr(e, "stage", None) or ctx.stage or "config"
        status, error, code = "failed", f"config error: {e}", EXIT_FAILED
        log.error("config error (%s): %s", failed_stage, e)
    except StageFailed as e:  # expected, explained failure: the message says it all
        status, error, code = "failed", str(e), EXIT_FAILED
        log.error("stage %s failed: %s", ctx.stage, e)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: record what ran, then stop (exit 130)
        _install(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the files below
        how = "SIGTERM" if isinstance(e, Interrupted) else "SIGINT"
        status, code = "interrupted", EXIT_INTERRUPTED
        error = f"interrupted by {how}" + (f" during stage {ctx.stage}" if ctx.stage else "")
    except Exception as e:  # noqa: BLE001 - any stage failure becomes status=failed
        status, error, code = "failed", f"{type(e).__name__}: {e}", EXIT_FAILED
        log.error("stage %s failed: %s\n%s", ctx.stage, error, traceback.format_exc())
    try:
        return _finish(cfg, run_dir, ctx, tracker, experiment, started, t0, status, error, code,
                       failed_stage or ctx.stage)
    finally:
        _install(signal.SIGTERM, prev_term)
        if status == "interrupted":
            _install(signal.SIGINT, signal.default_int_handler)


def _install(signum, handler):
    """signal.signal where allowed (main thread only); returns the previous handler."""
    try:
        return signal.signal(signum, handler)
    except (ValueError, TypeError):  # not the main thread (e.g. a launcher's worker thread)
        return None


def _finish(cfg, run_dir, ctx, tracker, experiment, started, t0, status, error, code, failed_stage):
    """metrics.json, timing.json, tracking and the summary: written for every outcome."""
    pcfg = cfg.pipeline
    if error:
        error = redact(error, secret_values(api_key_env_names(cfg)))  # provider messages may echo a key
    wall = time.perf_counter() - t0
    m = ctx.metrics
    samples_key = pcfg.get("samples_metric")
    samples = m.get(samples_key) if samples_key else None
    m.log("status", status)
    if error:
        m.log("error", error)
        if failed_stage:
            m.log("failed_stage", failed_stage)
    m.log("experiment", experiment)
    m.log("seed", ctx.extras.get("seed", ctx.seed))
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
    if status == "interrupted":  # one line, no summary table: the user asked to stop
        log.warning("%s; metrics.json and timing.json written to %s (status=interrupted). Rerun the same "
                    "command to resume: answered requests come from the cache.", error, run_dir)
        return RunResult(status, metrics, code)
    try:
        from runner.summary import print_summary

        print_summary(metrics, ctx.timer.report(wall, samples), run_dir, full=cfg.get("summary") == "full")
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
