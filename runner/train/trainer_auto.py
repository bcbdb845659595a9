"""`trainer=auto`: mlx-lm on Apple silicon (where it is fastest), the torch trainer everywhere else."""
from __future__ import annotations

import importlib.util
import platform
from typing import Any


def on_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def auto_trainer(torch: Any, mlx: Any, enabled: bool = True) -> Any:
    """Return the configured mlx trainer on Apple silicon with mlx-lm installed, else the torch one."""
    # Logit KD (trainer.torch.kd) exists in the torch trainer only: it decides for torch.
    kd_on = getattr(torch, "kd", None) is not None
    chosen, name = (mlx, "mlx") if on_apple_silicon() and importlib.util.find_spec("mlx_lm") is not None \
        and not kd_on else (torch, "torch")
    chosen.config_key = f"trainer.{name}"  # error messages name trainer.torch.X, as the user types it
    return chosen
