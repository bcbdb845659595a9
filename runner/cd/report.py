"""CD metrics: NRMSE, the cost accounting of a distillation run, and the PNG plots."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runner.cd.consistency import CDSettings
from runner.core.plotting import pyplot, save_figure


def nrmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """sqrt(mean((p - t)^2) / mean(t^2)) over all grid points and samples."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return float(np.sqrt(np.mean((pred - truth) ** 2) / np.mean(truth**2)))


def nrmse_per_sample(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return np.sqrt(np.mean((pred - truth) ** 2, axis=1) / np.mean(truth**2, axis=1))


def distill_cost(s: CDSettings, optimizer_steps: int, n_train: int, macs_per_row: int) -> dict[str, Any]:
    """What a CD run processes, per role, next to the seed's formula.

    rows = optimizer_steps x batch_size x accum_steps x num_taus (one row = one (sample, n, z) draw)
    student: rows forward+backward (~3 forward equivalents); teacher: 2 x rows forward (one Heun
    step); EMA target: rows forward. FLOPs ~= 2 x MACs per forward row.
    seed formula: iterations x (batch_size / micro_batch) x num_taus, iterations = batches run
    (optimizer_steps x accum_steps); it counts micro-batch launches times taus, not compute.
    """
    iterations = optimizer_steps * s.accum_steps
    samples = iterations * s.batch_size
    rows = samples * s.num_taus
    fwd_flops = 2 * macs_per_row
    micro_per_batch = s.batch_size // s.micro_batch
    return {
        "distill_optimizer_steps": optimizer_steps,
        "distill_batches": iterations,
        "distill_samples": samples,
        "distill_epochs": samples / n_train,
        "rows_student_fwd_bwd": rows,
        "rows_teacher_fwd": 2 * rows,
        "rows_target_fwd": rows,
        "student_forward_calls": iterations * micro_per_batch,  # taus are vectorised in one call
        "forward_passes_seed_formula": iterations * micro_per_batch * s.num_taus,
        "seed_formula_per_epoch": round(n_train / s.batch_size) * micro_per_batch * s.num_taus,
        "true_student_rows_per_epoch": n_train * s.num_taus,
        "macs_per_row": macs_per_row,
        "flops_student": 3 * fwd_flops * rows,
        "flops_teacher": fwd_flops * 2 * rows,
        "flops_target": fwd_flops * rows,
        "flops_total": 6 * fwd_flops * rows,
    }


def plot_nrmse_vs_nfe(path: Path, teacher: list[tuple[int, float]], student: list[tuple[int, float]]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(*zip(*teacher), "o-", label="EDM teacher (Heun)")
    ax.plot(*zip(*student), "s-", label="consistency student")
    ax.set_xscale("log")
    ax.set_yscale("log")  # few-step Heun on the Karras grid can be far off; keep the good end readable
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("NRMSE vs ground truth")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)


def plot_cases(path: Path, fields: dict[str, np.ndarray], u0: np.ndarray, n_cases: int) -> None:
    """A few test cases: u0, truth u(T) and each method's prediction."""
    plt = pyplot()
    n_cases = min(n_cases, u0.shape[0])
    x = np.linspace(0, 2 * np.pi, u0.shape[1], endpoint=False)
    fig, axes = plt.subplots(1, n_cases, figsize=(3.2 * n_cases, 3), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.plot(x, u0[i], color="0.7", lw=1, label="u(0)")
        for name, f in fields.items():
            ax.plot(x, f[i], lw=1.2, ls="-" if name == "truth" else "--", label=name)
        ax.set_title(f"test case {i}")
        ax.set_xlabel("x")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)
