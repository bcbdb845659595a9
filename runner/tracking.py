"""Optional experiment tracking (conf/logger): logger=mlflow mirrors a finished run into MLflow.

The tracker is built before any stage runs, so a missing package fails the run in seconds; it
logs after metrics.json is written and never turns a finished run into a failure.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig

from runner.core.stage import ConfigError

log = logging.getLogger("runner")


def build(logger_cfg: DictConfig | None) -> "MlflowTracker | None":
    """The configured tracker, or None for logger=none (an empty config)."""
    if not logger_cfg or not logger_cfg.get("_target_"):
        return None
    try:
        return instantiate(logger_cfg, _convert_="all")
    except Exception as e:  # Hydra wraps constructor errors; surface ours (e.g. mlflow missing)
        if isinstance(e.__cause__, ConfigError):
            raise e.__cause__ from None
        raise


def read_overrides(run_dir: Path) -> dict[str, str]:
    """Hydra's record of the command-line overrides: the run's parameters."""
    f = run_dir / ".hydra" / "overrides.yaml"
    out = {}
    for line in (yaml.safe_load(f.read_text()) if f.exists() else None) or []:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _mlflow_key(key: str) -> str:
    # MLflow accepts letters, digits, _ - . space and /; anything else becomes _.
    return re.sub(r"[^\w\-. /]", "_", key)


class MlflowTracker:
    def __init__(self, tracking_uri: str = "outputs/mlruns", experiment_name: str | None = None,
                 artifacts: list[str] | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise ConfigError("logger=mlflow needs the mlflow package: pip install -e '.[mlflow]' "
                              "(or choose logger=none)") from e
        if "://" not in tracking_uri and not tracking_uri.startswith("file:"):
            tracking_uri = Path(tracking_uri).expanduser().resolve().as_uri()  # a plain folder
        if tracking_uri.startswith("file:"):
            # MLflow >= 3.x keeps the folder store in maintenance mode behind this opt-in; it is the
            # one store that needs no server or database (and each run is its own folder, so
            # parallel sweep jobs do not contend).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.artifacts = list(artifacts or [])
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # a parallel sweep job created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def log_run(self, run_dir: Path, metrics: dict[str, Any]) -> str | None:
        """Log one finished run; returns the MLflow run id (None when logging failed)."""
        try:
            return self._log_run(Path(run_dir), metrics)
        except Exception as e:  # noqa: BLE001 - tracking must never fail a finished run
            log.warning("mlflow: could not log the run: %s", e)
            return None

    def _log_run(self, run_dir: Path, metrics: dict[str, Any]) -> str:
        from mlflow.entities import Metric, Param, RunTag

        name = self.experiment_name or str(metrics.get("experiment") or "default")
        run = self.client.create_run(self._experiment_id(name), run_name=f"{name}/{run_dir.name}",
                                     tags={"runner.run_dir": str(run_dir)})
        run_id = run.info.run_id
        now_ms = int(time.time() * 1000)
        params = [Param(_mlflow_key(k), v[:6000]) for k, v in read_overrides(run_dir).items()]
        numbers, tags = [], []
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                numbers.append(Metric(_mlflow_key(k), float(v), timestamp=now_ms, step=0))
            elif v is not None:
                tags.append(RunTag(_mlflow_key(k), str(v)[:5000]))
        for i in range(0, max(len(numbers), 1), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run_id, metrics=numbers[i:i + 1000], params=params if i == 0 else [],
                                  tags=tags if i == 0 else [])
        for pattern in self.artifacts:
            for f in sorted(run_dir.glob(pattern)):
                if f.is_file():
                    sub = os.path.dirname(os.path.relpath(f, run_dir)) or None
                    self.client.log_artifact(run_id, str(f), artifact_path=sub)
        status = "FINISHED" if metrics.get("status") == "ok" else "FAILED"
        self.client.set_terminated(run_id, status=status)
        log.info("mlflow: logged run %s to %s (experiment %s)", run_id, self.tracking_uri, name)
        return run_id
