"""One place for matplotlib set-up: headless backend, lazy import, atomic PNG writes."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, never a window), imported only when a
    plot is drawn: importing it costs ~0.5 s that runs without plots should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Tight layout, write the PNG atomically (a reader never sees half a file), free the figure."""
    from runner.core.artifacts import atomic_path

    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)
