"""A rich progress bar for training: step, loss, valid loss and tokens/s."""
from __future__ import annotations


class TrainProgress:
    def __init__(self, total_steps: int, enabled: bool = True):
        self.total, self.enabled = total_steps, enabled
        self._progress = self._task = None
        self._valid = "-"

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=self.total, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self._progress is not None:
            info = f"loss {loss:.4f}  valid {self._valid}  {tokens_per_s:,.0f} tok/s"
            self._progress.update(self._task, completed=step, info=info)

    def note_valid(self, valid_loss: float | None) -> None:
        if valid_loss is not None:
            self._valid = f"{valid_loss:.4f}"
