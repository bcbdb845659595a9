"""What a trainer is given (where to write) and what it hands back (the measured run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

LOG_SCHEMA = {"step": pl.Int64, "loss": pl.Float64, "valid_loss": pl.Float64, "lr": pl.Float64,
              "tokens": pl.Int64, "elapsed_s": pl.Float64, "dev_gold": pl.Float64,
              "on_policy": pl.Boolean}  # on_policy: null unless trainer.kd.on_policy > 0


@dataclass
class TrainPaths:
    model: Path                 # HF folder of the trained student (LoRA: merged into the base weights)
    adapter: Path               # LoRA/DoRA adapter only (written for those methods)
    checkpoints: Path           # periodic checkpoints of this run
    resume_dirs: list[Path] = field(default_factory=list)  # where to look for a checkpoint to resume


@dataclass
class TrainResult:
    log: list[dict[str, Any]]   # one row per optimizer step (loss) and per validation (valid_loss)
    steps: int
    final_loss: float | None
    best_valid_loss: float | None
    wall_s: float               # whole fit: load, tokenize, train, validate, save
    train_s: float              # optimizer steps only (forward, backward, update)
    tokens: int                 # non-padding tokens in the training batches, all processes
    params_total: int | None
    params_trainable: int | None
    dropped_train: int = 0      # rows longer than max_seq_length (skipped, not truncated)
    dropped_valid: int = 0
    resumed_from_step: int | None = None
    stopped_early: bool = False
    stopped_by: str = "steps"  # steps | patience | wall_cap | wall_budget (the last two: not reproducible)
    world_size: int = 1
    rank: int = 0
    merged: bool = False        # student_model holds adapter weights merged into the base
    valid_loss_reason: str | None = None  # why best_valid_loss is null, where the trainer knows better
    kd: dict[str, Any] | None = None      # logit distillation settings and costs (train.kd_* metrics)
    selected: str = "last"      # which checkpoint student_model holds: last | valid_loss | dev_gold
    best_step: int | None = None  # the step of that checkpoint
    dev_gold: float | None = None  # its gold match on the dev split (train tables; never eval)
    dev_rows: int | None = None
    precision: str = "fp32"     # what the matrix products ran in: fp32 | bf16 (autocast; weights fp32)

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.train_s if self.train_s > 0 and self.tokens else None


def log_train_metrics(metrics, result: TrainResult, trainer: Any) -> None:
    """The `train.*` keys of metrics.json (formulas in docs/students.md: tokens_per_s = tokens / train_s)."""
    metrics.update("train", {
        "backend": trainer.backend, "method": trainer.method, "steps": result.steps,
        "final_loss": result.final_loss, "best_valid_loss": result.best_valid_loss,
        "wall_s": round(result.wall_s, 3), "train_s": round(result.train_s, 3), "tokens": result.tokens,
        "tokens_per_s": result.tokens_per_s, "params_total": result.params_total,
        "params_trainable": result.params_trainable, "dropped_rows": result.dropped_train,
        "dropped_valid_rows": result.dropped_valid, "resumed_from_step": result.resumed_from_step,
        "stopped_early": result.stopped_early, "stopped_by": result.stopped_by, "world_size": result.world_size, "merged": result.merged,
        "precision": result.precision})
    metrics.update("train", {"checkpoint": result.selected, "best_step": result.best_step,
                             "dev_gold": result.dev_gold, "dev_rows": result.dev_rows,
                             "dev_max_new_tokens": getattr(trainer, "dev_max_new_tokens", None) if result.dev_rows else None})
    if result.kd:  # logit distillation: settings and costs (train.kd_teacher_s, ...)
        metrics.update("train", result.kd)
    if result.best_valid_loss is None:
        metrics.log("train.best_valid_loss_reason", result.valid_loss_reason or (
            "not measured: no validation ran (eval_every unset, or no valid.jsonl row fits max_seq_length)"))
