"""Run `python -m runner ...` as a user does: in a fresh working directory, with Hydra's default
output folders (no hydra.run.dir / hydra.sweep.dir), and find the run folder under outputs/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli_env(tmp_path: Path, cache_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["RUNNER_CACHE_DIR"] = str(cache_dir or tmp_path / "cache")
    return env


def cmd(args: list[str]) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # Hydra's parser wants -m before the overrides
    return [sys.executable, "-m", "runner", *flags, *[a for a in args if not a.startswith("-")]]


def run_in_tmp(args: list[str], tmp_path: Path, *, cache_dir: Path | None = None, timeout: float = 300,
               **env: str) -> tuple[subprocess.CompletedProcess, Path | None]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd(args), cwd=cwd, env=cli_env(tmp_path, cache_dir, **env), capture_output=True,
                          text=True, timeout=timeout)
    return proc, newest_run(cwd)


def newest_run(cwd: Path) -> Path | None:
    """The most recent single-run folder (holding metrics.json) under cwd/outputs, multiruns excluded."""
    runs = [p.parent for p in (cwd / "outputs").glob("**/metrics.json") if "multirun" not in p.parts]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
