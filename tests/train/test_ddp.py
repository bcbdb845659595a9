"""DDP: 2 CPU processes (gloo, via torchrun) at batch b follow the loss curve of 1 process at batch 2b."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from runner.train import cli as train_cli

REPO = Path(__file__).resolve().parents[2]
COMMON = ["max_steps=6", "eval_every=3", "learning_rate=3e-3", "warmup_steps=2", "num_threads=1",
          "progress=false", "max_valid_rows=null", "device=cpu"]


def _copy_inputs(src: Path, dst: Path) -> Path:
    art = dst / "artifacts"
    art.mkdir(parents=True)
    for name in ("train.jsonl", "valid.jsonl"):
        shutil.copy(src / "artifacts" / name, art / name)
    (art / "student_base").symlink_to((src / "artifacts" / "student_base").resolve(), target_is_directory=True)
    return dst


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_at_double_batch(toy_run_dir, tmp_path):
    single = _copy_inputs(toy_run_dir, tmp_path / "single")
    double = _copy_inputs(toy_run_dir, tmp_path / "ddp")
    assert train_cli.main(["--run-dir", str(single), "--set", "batch_size=16", *COMMON]) == 0

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "runner.train.cli", "--run-dir", str(double), "--set", "batch_size=8", *COMMON]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = pl.read_parquet(single / "artifacts" / "train_log.parquet")
    b = pl.read_parquet(double / "artifacts" / "train_log.parquet")
    assert json.loads((double / "artifacts" / "train_metrics.json").read_text())["world_size"] == 2
    assert a["step"].to_list() == b["step"].to_list()
    for col in ("loss", "valid_loss", "tokens"):
        x, y = a[col].to_list(), b[col].to_list()
        assert [v is None for v in x] == [v is None for v in y]
        assert [v for v in y if v is not None] == pytest.approx([v for v in x if v is not None], rel=1e-4), col
    first, last = a["loss"].drop_nulls()[0], a["loss"].drop_nulls()[-1]
    assert last < first  # the curves compared are a real training run, not a flat line
