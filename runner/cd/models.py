"""Networks for the Burgers surrogate: an MLP and a periodic 1-D conv net with one interface.

forward(fields, scalars): fields (B, C, G) stacked input fields, scalars (B, S) per-sample
numbers (the noise embedding); returns (B, G). The operator uses C=1, S=0; the denoiser and
the consistency student use C=2 (noisy residual, operator output) and S=1 (c_noise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from runner.core.stage import ConfigError


@dataclass
class NetSpec:
    """Architecture config (a `net:` block in a stage's config)."""

    arch: str = "mlp"  # mlp | conv
    width: int = 256
    depth: int = 3  # hidden layers (mlp) or conv blocks (conv)
    kernel: int = 5  # conv only

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "conv"):
            raise ConfigError(f"net.arch={self.arch!r} is not one of ['mlp', 'conv']")
        if self.width < 1 or self.depth < 1:
            raise ConfigError(f"net.width={self.width} and net.depth={self.depth} must be >= 1")
        if self.arch == "conv" and self.kernel % 2 == 0:
            raise ConfigError(f"net.kernel={self.kernel} must be odd (centred periodic convolution)")

    def build(self, grid: int, in_fields: int, in_scalars: int) -> nn.Module:
        if self.arch == "mlp":
            return FieldMLP(grid, in_fields, in_scalars, self.width, self.depth)
        return FieldConv(in_fields, in_scalars, self.width, self.depth, self.kernel)


class FieldMLP(nn.Module):
    def __init__(self, grid: int, in_fields: int, in_scalars: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(grid * in_fields + in_scalars, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, grid))
        self.net = nn.Sequential(*layers)

    def forward(self, fields: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        h = fields.flatten(1)
        if scalars is not None:
            h = torch.cat([h, scalars], dim=1)
        return self.net(h)


class FieldConv(nn.Module):
    """Residual conv blocks with circular padding (the domain is periodic)."""

    def __init__(self, in_fields: int, in_scalars: int, width: int, depth: int, kernel: int):
        super().__init__()
        conv = dict(kernel_size=kernel, padding=kernel // 2, padding_mode="circular")
        self.lift = nn.Conv1d(in_fields + in_scalars, width, **conv)
        self.blocks = nn.ModuleList(nn.Conv1d(width, width, **conv) for _ in range(depth))
        self.project = nn.Conv1d(width, 1, kernel_size=1)
        self.act = nn.SiLU()

    def forward(self, fields: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        h = fields
        if scalars is not None:  # broadcast each scalar as a constant channel
            h = torch.cat([h, scalars[:, :, None].expand(-1, -1, h.shape[-1])], dim=1)
        h = self.act(self.lift(h))
        for block in self.blocks:
            h = h + self.act(block(h))
        return self.project(h).squeeze(1)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def macs_per_row(net: nn.Module, grid: int, in_fields: int, in_scalars: int) -> int:
    """Multiply-accumulates of one forward pass on one sample, counted with hooks on Linear/Conv1d."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.Conv1d):
            total += module.in_channels * module.out_channels * module.kernel_size[0] * output.shape[-1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d))]
    try:
        with torch.no_grad():
            p = next(net.parameters())
            fields = torch.zeros(1, in_fields, grid, device=p.device)
            scalars = torch.zeros(1, in_scalars, device=p.device) if in_scalars else None
            net(fields, scalars)
    finally:
        for h in handles:
            h.remove()
    return total
