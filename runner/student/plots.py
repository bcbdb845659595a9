"""PNG plots of a run: accuracy bars (teacher / student before / after training) and loss curves."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from runner.core.plotting import pyplot, save_figure


def accuracy_bars(acc: dict[str, Any], path: Path, *, simulated: bool = False) -> Path:
    """Grouped bars: exec pass and gold match for teacher, student_pre, student_post (same eval rows)."""
    plt = pyplot()
    models = [(("teacher (simulated)" if simulated else "teacher"), acc.get("teacher")),
              ("student pre", acc.get("student_pre")), ("student post", acc.get("student_post"))]
    models = [(name, a) for name, a in models if a]
    metrics = [("exec_pass_rate", "exec pass"), ("gold_match_rate", "gold match")]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / len(models)
    for i, (name, a) in enumerate(models):
        xs = [j + i * width for j in range(len(metrics))]
        vals = [a.get(k) for k, _ in metrics]
        bars = ax.bar(xs, [v or 0.0 for v in vals], width, label=name)
        for b, v in zip(bars, vals):  # a missing value is labelled n/a, not drawn as a real 0
            ax.annotate("n/a" if v is None else f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(metrics))], [m for _, m in metrics])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("rate on held-out eval rows")
    rows = next((a.get("rows") for _, a in models if a.get("rows")), None)
    ax.set_title(f"Teacher vs student ({rows} eval rows)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def loss_curves(log: pl.DataFrame, path: Path) -> Path:
    """Training loss per step and validation loss where it was measured (train_log.parquet)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    train = log.filter(pl.col("loss").is_not_null()) if "loss" in log.columns else log.clear()
    if train.height:
        ax.plot(train["step"].to_list(), train["loss"].to_list(), label="train loss", lw=1)
    if "valid_loss" in log.columns:
        valid = log.filter(pl.col("valid_loss").is_not_null())
        if valid.height:
            ax.plot(valid["step"].to_list(), valid["valid_loss"].to_list(), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (assistant tokens)")
    ax.set_title("Student training")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
