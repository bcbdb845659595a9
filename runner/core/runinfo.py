"""Facts about the run's environment for metrics.json: versions, host, git commit."""
from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5)
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def run_info() -> dict[str, object]:
    return {
        "run.git_commit": git_commit(),
        "run.host": socket.gethostname(),
        "run.platform": platform.platform(),
        "version.python": platform.python_version(),
        "version.torch": package_version("torch"),
        "version.polars": package_version("polars"),
        "version.litellm": package_version("litellm"),
        "version.hydra": package_version("hydra-core"),
        "version.runner": package_version("runner"),
    }
