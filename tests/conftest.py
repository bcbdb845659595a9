"""Shared test setup: fast, isolated, offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Before torch is imported by any test module (spin-waiting OpenMP is ~10x slower on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
_shared = REPO.parent / "shared" / "data"
if "RUNNER_DATA_DIR" not in os.environ and _shared.exists():
    os.environ["RUNNER_DATA_DIR"] = str(_shared)

import runner.resolvers  # noqa: E402,F401


def data_dir() -> Path | None:
    d = os.environ.get("RUNNER_DATA_DIR")
    return Path(d) if d and (Path(d) / "wikisql").exists() else None


requires_data = pytest.mark.skipif(data_dir() is None, reason="WikiSQL data not found (set RUNNER_DATA_DIR)")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache dir per test session: built DBs and datasets are reused, ~/.cache untouched."""
    return tmp_path_factory.mktemp("runner-cache")


def run_cli(args: list[str], tmp_path: Path, *, env: dict[str, str] | None = None,
            cache_dir: Path | None = None, timeout: float = 600) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `python -m runner ARGS` in a subprocess with outputs under tmp_path.

    Returns the completed process and the single-run folder (hydra.run.dir)."""
    run_dir = tmp_path / "run"
    full_env = {**os.environ, **(env or {})}
    full_env["RUNNER_CACHE_DIR"] = str(cache_dir or (tmp_path / "cache"))
    flags = [a for a in args if a.startswith("-")]  # argparse wants -m/--cfg before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", "runner", *flags, f"hydra.run.dir={run_dir}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc, run_dir


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
