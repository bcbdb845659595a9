"""Consistency distillation (Song et al. 2023): settings, per-step draws, and the accumulated
gradient of one optimizer step split into micro-batches.

The (sample index, n, z) draws of an optimizer step are made once for the whole effective
batch (batch_size x accum_steps) before it is cut into accumulation chunks and micro-batches,
so the gradient does not depend on how the batch is partitioned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from runner.cd.edm import Denoiser, heun_step
from runner.core.stage import ConfigError

TAU_DISTRIBUTIONS = ("uniform", "beta")
DISTANCES = ("l2", "l1", "pseudo_huber")


@dataclass
class CDSettings:
    """conf/consistency_distill/*.yaml. The constructor validates, so a bad value fails the run
    when the pipeline is built, before any data is generated."""

    steps: int = 1500  # optimizer steps; ignored when `epochs` is set
    epochs: float | None = None  # budget in passes over the training set instead of steps
    batch_size: int = 64
    micro_batch: int = 32
    num_taus: int = 4
    accum_steps: int = 1
    N: int = 18
    tau_distribution: str = "uniform"
    beta_alpha: float = 1.0
    beta_beta: float = 1.0
    mu: float = 0.95
    distance: str = "l2"
    huber_c: float = 0.03
    lr: float = 1e-4
    grad_clip: float | None = 1.0
    bf16: bool = False
    compile: bool = False
    log_every: int = 100

    def __post_init__(self) -> None:
        g = "consistency_distill"
        for key in ("batch_size", "micro_batch", "num_taus", "accum_steps", "steps", "log_every"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{g}.{key}={v!r} must be an integer >= 1")
        if self.batch_size % self.micro_batch:
            raise ConfigError(
                f"{g}.micro_batch={self.micro_batch} does not divide {g}.batch_size={self.batch_size}; "
                f"pick a micro_batch among the divisors of {self.batch_size}: "
                f"{[d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"{g}.epochs={self.epochs} must be > 0 (or null to use {g}.steps)")
        if self.N < 2:
            raise ConfigError(f"{g}.N={self.N} must be >= 2 (the discretisation needs two noise levels)")
        if self.tau_distribution not in TAU_DISTRIBUTIONS:
            raise ConfigError(f"{g}.tau_distribution={self.tau_distribution!r} is not one of {list(TAU_DISTRIBUTIONS)}")
        if self.beta_alpha <= 0 or self.beta_beta <= 0:
            raise ConfigError(f"{g}.beta_alpha and beta_beta must be > 0")
        if not 0 <= self.mu < 1:
            raise ConfigError(f"{g}.mu={self.mu} must be in [0, 1) (EMA decay of the target network)")
        if self.distance not in DISTANCES:
            raise ConfigError(f"{g}.distance={self.distance!r} is not one of {list(DISTANCES)}")
        if self.lr <= 0 or self.huber_c <= 0:
            raise ConfigError(f"{g}.lr and {g}.huber_c must be > 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{g}.grad_clip={self.grad_clip} must be > 0 or null (no clipping)")

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accum_steps

    def optimizer_steps(self, n_train: int) -> int:
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * n_train / self.effective_batch))


@dataclass
class StepDraw:
    """Random choices of one optimizer step: rows are (sample, tau) pairs."""

    sample_idx: np.ndarray  # (B_eff,)
    n: np.ndarray  # (B_eff, num_taus) indices into the N-point grid, in [0, N-2]
    z: np.ndarray  # (B_eff, num_taus, grid)


def draw_step(rng: np.random.Generator, settings: CDSettings, n_train: int, grid: int) -> StepDraw:
    b, taus, N = settings.effective_batch, settings.num_taus, settings.N
    idx = rng.integers(0, n_train, size=b)
    if settings.tau_distribution == "uniform":
        n = rng.integers(0, N - 1, size=(b, taus))
    else:  # beta(alpha, beta) on [0, 1) mapped onto the N-1 index bins
        u = rng.beta(settings.beta_alpha, settings.beta_beta, size=(b, taus))
        n = np.minimum((u * (N - 1)).astype(np.int64), N - 2)
    z = rng.standard_normal((b, taus, grid)).astype(np.float32)
    return StepDraw(idx, n, z)


def distance(a: torch.Tensor, b: torch.Tensor, kind: str, huber_c: float) -> torch.Tensor:
    """Per-row distance, averaged over grid points."""
    diff = (a - b).float()
    if kind == "l2":
        return (diff**2).mean(dim=1)
    if kind == "l1":
        return diff.abs().mean(dim=1)
    return ((diff**2).mean(dim=1) + huber_c**2).sqrt() - huber_c


@dataclass
class Models:
    student: Denoiser  # trained (consistency scalings)
    target: Denoiser  # EMA of the student, no grad
    teacher: Denoiser  # frozen EDM denoiser


def accumulate_gradients(models: Models, y: torch.Tensor, cond: torch.Tensor, draw: StepDraw,
                         sigmas: torch.Tensor, settings: CDSettings, autocast_device: str | None = None) -> float:
    """Backward of one optimizer step's loss into the student's .grad; returns the loss.

    y, cond: (n_train, grid) tensors on the device. Loss = mean over all B_eff*num_taus rows of
    d(f_theta(x_hi, t_hi), f_target(x_hat_lo, t_lo)); each micro-batch adds its rows' share
    (sum / total rows), so the accumulated gradient equals the full-batch gradient.
    """
    device = y.device
    total_rows = settings.effective_batch * settings.num_taus
    idx = torch.as_tensor(draw.sample_idx, device=device)
    n = torch.as_tensor(draw.n, device=device)
    z = torch.as_tensor(draw.z, device=device)
    loss_sum = 0.0
    for start in range(0, settings.effective_batch, settings.micro_batch):
        rows = slice(start, start + settings.micro_batch)
        grid = y.shape[1]
        y_m = y[idx[rows]].repeat_interleave(settings.num_taus, dim=0)
        cond_m = cond[idx[rows]].repeat_interleave(settings.num_taus, dim=0)
        n_m, z_m = n[rows].reshape(-1), z[rows].reshape(-1, grid)
        t_hi, t_lo = sigmas[n_m], sigmas[n_m + 1]
        x_hi = y_m + t_hi[:, None] * z_m
        with torch.autocast(autocast_device or "cpu", dtype=torch.bfloat16, enabled=autocast_device is not None):
            with torch.no_grad():
                x_lo = heun_step(models.teacher, x_hi, t_hi, t_lo, cond_m)
                target = models.target(x_lo, t_lo, cond_m)
            pred = models.student(x_hi, t_hi, cond_m)
            loss = distance(pred, target, settings.distance, settings.huber_c).sum() / total_rows
        loss.backward()
        loss_sum += float(loss.detach())
    return loss_sum


@torch.no_grad()
def ema_update(target: torch.nn.Module, student: torch.nn.Module, mu: float) -> None:
    for p_t, p_s in zip(target.parameters(), student.parameters()):
        p_t.lerp_(p_s, 1.0 - mu)  # p_t = mu p_t + (1 - mu) p_s


def optimizer_step(models: Models, optimizer: torch.optim.Optimizer, y: torch.Tensor, cond: torch.Tensor,
                   draw: StepDraw, sigmas: torch.Tensor, settings: CDSettings,
                   autocast_device: str | None = None) -> tuple[float, float]:
    """One full CD update: gradients over the effective batch, clip, step, then the EMA target.
    Returns (loss, gradient norm before clipping)."""
    optimizer.zero_grad(set_to_none=True)
    loss = accumulate_gradients(models, y, cond, draw, sigmas, settings, autocast_device)
    params = [p for p in models.student.parameters() if p.grad is not None]
    max_norm = settings.grad_clip if settings.grad_clip is not None else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    optimizer.step()
    ema_update(models.target, models.student, settings.mu)
    return loss, grad_norm
