"""The Stage contract: what every pipeline step declares and implements.

A stage is a plain class instantiated by Hydra from its `_target_`. It declares the
artifacts it reads and writes (names in the run's artifact store) so the pipeline can
check the whole chain before anything expensive runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from runner.core.context import RunContext


class ConfigError(ValueError):
    """A configuration problem found before any work is done. The message names the fix."""


class StageFailed(RuntimeError):
    """An expected failure (e.g. the teacher's provider is unreachable) whose message names the
    cause and the fix: status `failed`, exit 1, logged without a traceback."""


class GateFailed(RuntimeError):
    """Raised by a stage when a quality gate stops the run (status `gated`, exit code 3)."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}


class Stage:
    """Base class. Subclasses set `reads`/`writes` (class or instance attributes) and `run`.

    `name` is assigned by the pipeline from the stage's key in `pipeline.stages`.
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    # Optional artifacts: used when present, never required by validation.
    reads_optional: tuple[str, ...] = ()
    name: str = ""

    def validate(self, ctx: "RunContext") -> None:
        """Check the stage's own config; raise ConfigError. Must be cheap: no data, no network."""

    def notices(self) -> list[str]:
        """Lines every reader of this run must see (run.log start, console summary, metrics
        `run.notices`), e.g. that a component is simulated. Asked after validation."""
        return []

    def run(self, ctx: "RunContext") -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.run")


def check_range(stage: str, key: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False) -> None:
    """Raise ConfigError unless lo <= value <= hi (or lo < value when lo_open)."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{stage}.{key} must be a number, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        op = ">" if lo_open else ">="
        raise ConfigError(f"{stage}.{key}={value} is out of range: it must be {op} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{stage}.{key}={value} is out of range: it must be <= {hi}")


def check_choice(stage: str, key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{stage}.{key}={value!r} is not one of {choices}")
