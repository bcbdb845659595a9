"""RunContext: everything a stage may touch, passed explicitly (no hidden global state)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core.artifacts import ArtifactStore
from runner.core.metrics import Metrics, Timer


def default_cache_dir(configured: str | None = None) -> Path:
    """Config value, else $RUNNER_CACHE_DIR, else ~/.cache/runner."""
    raw = configured or os.environ.get("RUNNER_CACHE_DIR") or "~/.cache/runner"
    return Path(os.path.expanduser(raw)).resolve()


@dataclass
class RunContext:
    run_dir: Path
    store: ArtifactStore
    metrics: Metrics
    timer: Timer
    log: logging.Logger
    cache_dir: Path
    seed: int
    experiment: str = "default"
    # Set by the runner while a stage runs, so helpers can scope timing to it.
    stage: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, run_dir: Path, *, seed: int = 0, cache_dir: str | Path | None = None,
               experiment: str = "default", reuse_from: list[str | Path] | None = None,
               logger: logging.Logger | None = None) -> "RunContext":
        run_dir = Path(run_dir)
        fallbacks = [Path(p) / "artifacts" for p in (reuse_from or [])]
        cache = default_cache_dir(str(cache_dir) if cache_dir else None)
        cache.mkdir(parents=True, exist_ok=True)
        return cls(run_dir=run_dir, store=ArtifactStore(run_dir / "artifacts", fallbacks),
                   metrics=Metrics(), timer=Timer(), log=logger or logging.getLogger("runner"),
                   cache_dir=cache, seed=int(seed), experiment=experiment)

    def stage_seed(self, salt: str) -> int:
        """A per-stage seed derived from the run seed, stable across Python processes."""
        import zlib

        return (self.seed * 1_000_003 + zlib.crc32(salt.encode())) % (2**31 - 1)
