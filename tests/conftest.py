"""Shared test setup: fast, isolated, offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.toy import toy_rows, write_jsonl

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

# pg_server, pg_url, slurm: services started on loopback by the tests themselves.
pytest_plugins = ["tests.services.fixtures"]


def data_dir() -> Path | None:
    d = os.environ.get("RUNNER_DATA_DIR")
    return Path(d) if d and (Path(d) / "wikisql").exists() else None


requires_data = pytest.mark.skipif(data_dir() is None, reason="WikiSQL data not found (set RUNNER_DATA_DIR)")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache dir per test session: built DBs and datasets are reused, ~/.cache untouched."""
    return tmp_path_factory.mktemp("runner-cache")


def _written_at(folder: Path, sweep: bool) -> float:
    """When Hydra last started a job in this folder: it rewrites .hydra/config.yaml at each start
    (so a folder reused by a second run in the same second counts too)."""
    configs = folder.glob("*/.hydra/config.yaml") if sweep else [folder / ".hydra" / "config.yaml"]
    return max([f.stat().st_mtime for f in configs if f.is_file()], default=0.0)


def output_folders(cwd: Path, sweep: bool, since: float) -> list[Path]:
    """Hydra's default folders under cwd written since `since`, oldest first: for sweeps
    outputs/multirun/<exp>/<date>/<time>, else outputs/<exp>/<date>/<time> (not outputs/mlruns/...)."""
    out = cwd / "outputs"
    found = out.glob("multirun/*/*/*") if sweep else \
        (p for p in out.glob("*/*/*") if p.relative_to(out).parts[0] != "multirun")
    recent = [(t, p) for p in found if (t := _written_at(p, sweep)) >= since]
    return [p for _, p in sorted(recent)]


def run_cli(args: list[str], tmp_path: Path, *, env: dict[str, str] | None = None,
            cache_dir: Path | None = None, timeout: float = 600) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `python -m runner FLAGS OVERRIDES` exactly as a user types it, from tmp_path as the
    working directory, so Hydra's default `outputs/...` folders land in tmp_path. Never pass
    hydra.run.dir / hydra.sweep.dir here: the tests must exercise the folders users get.

    Returns the completed process and the folder the run made: the run folder for a single run,
    the sweep folder (holding 0/, 1/, ...) with -m. When none was made (e.g. a config error caught
    by Hydra), a path that does not exist."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    full_env["RUNNER_CACHE_DIR"] = str(cache_dir or (tmp_path / "cache"))
    # `python -m runner` from tmp_path imports the repo's package (and tests.* stage targets).
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    flags = [a for a in args if a.startswith("-")]  # Hydra's argparse wants -m/--cfg before overrides
    overrides = [a for a in args if not a.startswith("-")]
    sweep = "-m" in flags or "--multirun" in flags
    t0 = time.time() - 0.05  # file times may lag the clock by a tick
    proc = subprocess.run([sys.executable, "-m", "runner", *flags, *overrides], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    new = output_folders(tmp_path, sweep, t0)
    return proc, (new[-1] if new else tmp_path / "outputs" / "(no run folder)")


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# The toy Text2SQL task and a micro scratch student (~100k params), shared by tests/lm, tests/train
# and tests/student (session-scoped: built once, only when a test asks).
# Small enough that a few dozen CPU steps learn the toy task; the lm/train/student tests.
MICRO = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
         "intermediate_size": 128, "vocab_size": 384}


@pytest.fixture(scope="session")
def toy_split():
    rows = toy_rows(160, seed=0)
    return rows[:128], rows[128:]


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory, toy_split) -> Path:
    """A micro scratch student (tokenizer trained on the toy training chats), saved as a HF folder."""
    from runner.lm.scratch import (
        ScratchStudent,  # torch + transformers: only for tests that ask
    )

    out = tmp_path_factory.mktemp("micro") / "student_base"
    ScratchStudent("micro", {"micro": MICRO}, max_position_embeddings=256).build(toy_split[0], out, seed=0)
    return out


@pytest.fixture(scope="session")
def toy_run_dir(tmp_path_factory, toy_split, micro_base) -> Path:
    """A run folder holding what the Text2SQL stages and student_init would have written."""
    run = tmp_path_factory.mktemp("toyrun")
    art = run / "artifacts"
    write_jsonl(toy_split[0], art / "train.jsonl")
    write_jsonl(toy_split[1], art / "valid.jsonl")
    (art / "student_base").symlink_to(micro_base, target_is_directory=True)
    return run
