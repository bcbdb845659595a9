"""The engine's live progress bar: done/total, requests/s, tokens/s, cost so far, ETA, errors.

Rich only when asked for and attached to a terminal; otherwise a no-op so logs stay clean.
"""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class GenerationProgress:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.total = total
        self.start = time.monotonic()
        self.sent = 0  # responses from the provider this run (rates exclude cache hits)
        self.tokens = 0
        self.cost: float | None = 0.0
        self.errors = 0
        self.bar: Progress | None = None
        if enabled and total and sys.stderr.isatty():
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=Console(stderr=True),
                                transient=False)
            self.task = self.bar.add_task(desc, total=total, stats="")
            self.bar.start()

    def advance(self, n: int = 1, *, sent: bool = False, tokens: int | None = None,
                cost: float | None = None, error: bool = False) -> None:
        self.errors += error
        if sent:
            self.sent += n
            self.tokens += tokens or 0
            self.cost = None if (self.cost is None or cost is None) else self.cost + cost
        if self.bar is None:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        cost_txt = "cost ?" if self.cost is None else f"${self.cost:.4f}"
        stats = (f"{self.sent / elapsed:.1f} req/s  {self.tokens / elapsed:.0f} tok/s  {cost_txt}  "
                 f"errors {self.errors}")
        self.bar.update(self.task, advance=n, stats=stats)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
