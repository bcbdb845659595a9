"""The engine's live progress bar: done/total, requests/s, tokens/s, cost so far, ETA, errors.

Rich when asked for and attached to a terminal. Otherwise (CI logs, nohup, pipes) a log line
every 10 % of the rows (at most one per `min_gap_s`) or every `every_s` seconds, so a long run
is never silent and a short one adds no lines.
"""
from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


class GenerationProgress:
    def __init__(self, total: int, desc: str, enabled: bool, log: logging.Logger | None = None,
                 every_s: float = 30.0, min_gap_s: float = 5.0):
        self.total, self.desc = total, desc
        self.start = time.monotonic()
        self.sent = 0  # responses from the provider this run (rates exclude cache hits)
        self.tokens = 0
        self.cost: float | None = 0.0
        self.errors = 0
        self.bar: Progress | None = None
        self.done = 0
        self.log = log if enabled and total and not sys.stderr.isatty() else None
        self.every_s, self.min_gap_s = every_s, min_gap_s
        self.last_log, self.next_tenth = self.start, 1
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
        self.done += n
        if self.bar is None and self.log is None:
            return
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-9)
        cost_txt = "cost ?" if self.cost is None else f"${self.cost:.4f}"
        stats = (f"{self.sent / elapsed:.1f} req/s  {self.tokens / elapsed:.0f} tok/s  {cost_txt}  "
                 f"errors {self.errors}")
        if self.bar is not None:
            self.bar.update(self.task, advance=n, stats=stats)
            return
        tenth = self.done * 10 // self.total
        if (tenth >= self.next_tenth and now - self.last_log >= self.min_gap_s) or now - self.last_log >= self.every_s:
            self.log.info("%s: %d/%d (%d%%) in %.0f s  %s", self.desc, self.done, self.total,
                          100 * self.done // self.total, elapsed, stats)
            self.last_log, self.next_tenth = now, tenth + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
