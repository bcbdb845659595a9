"""Training precision: `trainer.precision: auto | fp32 | bf16` (docs/performance.md has the figures).

bf16 here is autocast: weights, optimizer state, loss and checkpoints stay fp32; the matrix
products run in bf16. On a CPU that pays only with bf16 matrix units (AMX, or AVX-512 BF16), and
only when the matrices are big enough: measured on the 2-core AMX machine, hidden 128 trains
slower in bf16 than in fp32, hidden 256 and up faster. So `auto` picks
  * bf16 on CUDA (as `bf16_autocast: true` always did);
  * bf16 on a CPU with AMX-BF16 for a student of hidden size >= BF16_MIN_HIDDEN;
  * fp32 everywhere else (no matrix units, AVX-512 BF16 only: not measured, tiny students).
`bf16_autocast` (the older key) still works: false turns `auto` into fp32, and contradicts an
explicit `precision: bf16` (refused).

On a CPU, bf16 training also switches attention to transformers' `eager` path (matmul + softmax):
torch's CPU flash-attention backward in bf16 was 6x slower than in fp32 (profiled: 658 ms vs 104 ms
for 2 steps of `small`), which ate the whole gain of the bf16 matrix products.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from pathlib import Path

from runner.core.stage import ConfigError, check_choice

PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_HIDDEN = 256  # below it bf16 was slower than fp32 on this CPU (tiny: 0.8x; docs/performance.md)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_units() -> str | None:
    """`amx` (AMX-BF16 tiles), `avx512_bf16` (bf16 dot products in AVX-512), or None."""
    flags = cpu_flags()
    if "amx_bf16" in flags and "amx_tile" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return None


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def check_precision(key: str, precision: str, bf16_autocast: bool, device: str) -> None:
    """Validation: refuse bf16 where the hardware cannot run it fast, before any work is done."""
    check_choice(key, "precision", precision, PRECISIONS)
    if precision != "bf16":
        return
    if not bf16_autocast:
        raise ConfigError(f"{key}.precision=bf16 contradicts {key}.bf16_autocast=false (the older key that "
                          f"turns bf16 off); drop one of them")
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        return
    if dev == "cpu" and cpu_bf16_units() is None:
        raise ConfigError(f"{key}.precision=bf16 on a CPU without bf16 matrix units (no amx_bf16 or avx512_bf16 "
                          f"in /proc/cpuinfo flags): bf16 would be emulated and slower than fp32; use "
                          f"{key}.precision=auto or fp32")
    if dev not in ("cpu",) and not dev.startswith("cuda"):
        raise ConfigError(f"{key}.precision=bf16 is supported on cpu and cuda, not on {dev!r}")


def resolve_precision(precision: str, bf16_autocast: bool, device: str, hidden_size: int | None) -> tuple[str, str]:
    """(`fp32` | `bf16`, why). `device` is resolved (cpu, cuda, cuda:N)."""
    if precision != "auto":
        return precision, "asked for"
    if not bf16_autocast:
        return "fp32", "bf16_autocast=false"
    if device.startswith("cuda"):
        return "bf16", "auto: CUDA"
    if device != "cpu":
        return "fp32", f"auto: {device}"
    units = cpu_bf16_units()
    if units != "amx":
        return "fp32", f"auto: CPU without AMX-BF16 ({units or 'no bf16 units'})"
    if hidden_size is None or hidden_size < BF16_MIN_HIDDEN:
        return "fp32", f"auto: hidden size {hidden_size} < {BF16_MIN_HIDDEN} (bf16 measured slower there)"
    return "bf16", f"auto: AMX-BF16, hidden size {hidden_size}"


def attn_implementation(precision: str, device: str) -> str | None:
    """Attention path for training at this precision; None keeps transformers' default (sdpa)."""
    return "eager" if precision == "bf16" and device == "cpu" else None


def autocast(precision: str, device: str):
    """The forward's context: bf16 autocast, or nothing (fp32)."""
    if precision != "bf16":
        return nullcontext()
    import torch

    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


class Bf16Weights:
    """bf16 weights for the forward and backward of one optimizer step, fp32 everywhere else.

    Autocast keeps fp32 weights and a fp32 residual stream, so every linear layer casts its input
    and RMSNorm casts back: on `small` those conversions took 19 % of a bf16 step (aten::copy_,
    profiled), more than the bf16 matrix products saved. Here the parameters' storage is swapped
    to bf16 copies on entry, so activations stay bf16 end to end; after each backward `collect()`
    adds the bf16 gradients into fp32 accumulators (grad_accum sums in fp32), and on exit the fp32
    weights come back with fp32 gradients. Clipping, AdamW, checkpoints, validation and saving
    then see fp32 weights only: the master copy never leaves fp32.
    Not under DDP (its gradient buckets are fp32): the trainer uses autocast there.
    """

    def __init__(self, model, enabled: bool = True):
        self.params = [p for p in model.parameters()] if enabled else []
        self.master: list = []
        self.grads: list = []

    def __enter__(self):
        import torch

        self.master = [p.data for p in self.params]
        self.grads = [None] * len(self.params)
        for p in self.params:
            p.data = p.data.to(torch.bfloat16)
        return self

    def collect(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                g = p.grad.float()
                self.grads[i] = g if self.grads[i] is None else self.grads[i].add_(g)
                p.grad = None

    def __exit__(self, *exc):
        self.collect()
        for p, m, g in zip(self.params, self.master, self.grads):
            p.data = m
            p.grad = g
        self.master, self.grads = [], []
        return False
