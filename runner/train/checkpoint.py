"""Training checkpoints: `step_0000040.pt` files holding everything needed to resume exactly.

A checkpoint stores the trainable weights (all of them for full fine-tuning, only the adapter
for LoRA), the optimizer and scheduler state, the step, the early-stopping state and the log
so far. The data order is a pure function of (seed, epoch), so the step alone says where to go on.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.core.artifacts import atomic_path

_NAME = re.compile(r"^step_(\d+)\.pt$")


def latest_checkpoint(dirs: list[Path]) -> Path | None:
    """The highest-step checkpoint in the first of `dirs` that has one."""
    for d in dirs:
        if not d or not d.is_dir():
            continue
        found = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)))
        if found:
            return found[-1][1]
    return None


def save_checkpoint(ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    import torch

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:07d}.pt"
    with atomic_path(path) as tmp:  # a killed run never leaves a half-written checkpoint
        torch.save(state, tmp)
    old = sorted(p for p in ckpt_dir.iterdir() if _NAME.match(p.name))
    for p in old[:-keep] if keep > 0 else []:
        p.unlink()
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def trainable_state(model) -> dict[str, Any]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}
