"""Keep third-party noise off the console and in run.log.

The console shows the run's own log. Deprecation warnings (captured from `warnings`) and the
logs of transformers / huggingface_hub / torch below ERROR go to run.log only; their tqdm
progress bars ("Loading weights", "Writing model shards") are switched off: a bar in a log file
is noise and on a terminal it interleaves with the run's own progress.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterable

_NOISY = ("py.warnings", "transformers", "huggingface_hub", "torch", "accelerate", "peft")


class _ThirdPartyFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(record.name == n or record.name.startswith(n + ".") for n in _NOISY)
        return not noisy or record.levelno >= logging.ERROR


def quiet_third_party(modules: Iterable[str] = ()) -> None:
    """Call once per run, before stages run. `modules`: the stage classes' modules; transformers is
    only imported (0.8 s) when one of them uses it."""
    # Read by huggingface_hub (and transformers, which follows it) when first imported.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.captureWarnings(True)
    root = logging.getLogger()
    for h in root.handlers:
        if not isinstance(h, logging.FileHandler) and not any(isinstance(f, _ThirdPartyFilter) for f in h.filters):
            h.addFilter(_ThirdPartyFilter())
    if "transformers" in sys.modules or any(m.startswith(("runner.student", "runner.providers.local_hf"))
                                            for m in modules):
        tame_transformers()


def tame_transformers() -> None:
    """transformers logs to its own stderr handler and does not propagate: route it to the root
    logger (run.log; the console filter above keeps it off the screen) and stop its bars."""
    try:
        import transformers.utils.logging as tlog
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    tlog.disable_progress_bar()
    tlog.disable_default_handler()
    tlog.enable_propagation()


def format_value(v: Any, none: str = "null") -> str:
    """How tables show a metric: 4 significant digits for floats, `none` for a missing value."""
    if v is None:
        return none
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
