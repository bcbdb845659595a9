"""Torch runtime settings shared by the CD stages: device, CPU threads, memory and GPU probes."""
from __future__ import annotations

import math
import resource
import sys
from dataclasses import dataclass

import torch

from runner.core.stage import ConfigError


@dataclass
class TorchRuntime:
    """`pipeline.runtime` in conf/pipeline/burgers_cd.yaml."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 1  # torch intra-op threads on CPU (small MLPs: 1 thread is fastest here)

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"runtime.device={self.device!r} must be auto, cpu, cuda or cuda:N")
        if self.num_threads < 1:
            raise ConfigError(f"runtime.num_threads={self.num_threads} must be >= 1")

    def resolve(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"runtime.device={self.device} but CUDA is not available; use runtime.device=auto or cpu")
        return torch.device(self.device)

    def apply(self) -> torch.device:
        torch.set_num_threads(self.num_threads)
        device = self.resolve()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return device


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MB, what was measured). On CPU ru_maxrss is the process's peak so far (all phases)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "ru_maxrss (process peak)"


def gpu_utilization(device: torch.device) -> tuple[float | None, str]:
    """(percent, note). None with the reason when it cannot be read."""
    if device.type != "cuda":
        return None, "not measured: running on CPU"
    try:
        return float(torch.cuda.utilization(device)), "torch.cuda.utilization (NVML sample at the end of the phase)"
    except Exception as e:  # noqa: BLE001 - pynvml missing or driver without NVML
        return None, f"not measured: {type(e).__name__}: {e}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cosine_lr(step: int, total: int, base: float, warmup: int = 0) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))
