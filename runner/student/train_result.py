"""What a trainer is given (where to write) and what it hands back (the measured run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    world_size: int = 1
    rank: int = 0
    merged: bool = False        # student_model holds adapter weights merged into the base
    valid_loss_reason: str | None = None  # why best_valid_loss is null, where the trainer knows better
    kd: dict[str, Any] | None = None      # logit distillation settings and costs (train.kd_* metrics)
    selected: str = "last"      # which checkpoint student_model holds: last | valid_loss | dev_gold
    best_step: int | None = None  # the step of that checkpoint
    dev_gold: float | None = None  # its gold match on the dev split (train tables; never eval)
    dev_rows: int | None = None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.train_s if self.train_s > 0 and self.tokens else None
