"""Learning-rate schedules whose length can be fixed after training has started.

With a wall-clock budget (`trainer.max_wall_s`) the number of optimizer steps is only known once
a few steps have been timed. transformers' schedulers capture `num_training_steps` when they are
built, so the cosine would end at the wrong step; here the total lives in a `Plan` the schedule
reads at every step, and `Plan.fit_wall` sets it from the measured step time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class Plan:
    total_steps: int
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_ratio: float = 0.0  # the floor of linear/cosine decay, as a fraction of the peak lr
    cap: int | None = None  # the most steps a refit may plan (epochs or max_steps); default total_steps

    def __post_init__(self) -> None:
        if self.cap is None:
            self.cap = self.total_steps

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
        if self.schedule == "constant":
            return 1.0
        if step < self.warmup_steps:
            return step / self.warmup_steps  # as transformers: lr 0 at the first step
        if self.schedule == "constant_with_warmup":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        done = min(1.0, (step - self.warmup_steps) / span)
        decay = 1.0 - done if self.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
        return self.min_ratio + (1.0 - self.min_ratio) * decay

    def fit_wall(self, step: int, step_s: float, elapsed_s: float, budget_s: float,
                 overhead_per_step_s: float = 0.0) -> int:
        """Set total_steps so that the remaining steps, at `step_s` each plus their share of
        periodic work (validation: its time / eval_every), end within `budget_s` (never more than
        `cap`, never fewer than `step`). Called again later, it corrects an early estimate."""
        left = max(0.0, 0.95 * budget_s - elapsed_s)  # 5 % slack: later steps run a little slower
        per_step = max(step_s + overhead_per_step_s, 1e-9)
        self.total_steps = max(step, min(self.cap, step + int(left / per_step)))
        return self.total_steps


def lambda_scheduler(optimizer, plan: Plan):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, plan.factor)
