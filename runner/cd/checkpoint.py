"""Model checkpoints as artifact files: the net's spec and weights plus whatever a stage adds."""
from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runner.cd.models import NetSpec
from runner.core.artifacts import atomic_write_bytes


def save_checkpoint(path: Path, net: nn.Module, spec: NetSpec, **extra: Any) -> None:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"spec": asdict(spec), "state": state, **extra}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def build_from_checkpoint(ckpt: dict[str, Any], grid: int, in_fields: int, in_scalars: int,
                          device: torch.device) -> tuple[nn.Module, NetSpec]:
    spec = NetSpec(**ckpt["spec"])
    net = spec.build(grid, in_fields, in_scalars)
    net.load_state_dict(ckpt["state"])
    return net.to(device), spec
