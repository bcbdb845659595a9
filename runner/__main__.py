"""`python -m runner +experiment=NAME [overrides] [-m]`: the Hydra entry point."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Before torch/numpy import anywhere: OpenMP spin-waiting makes 2-thread CPU work ~10x slower here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import runner.resolvers  # noqa: E402,F401  (registers ${exp_name:...})
from runner.app import EXIT_INTERRUPTED, execute, optimized_value  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    experiment = hc.runtime.choices.get("experiment") or "default"
    result = execute(cfg, Path(hc.runtime.output_dir), experiment=experiment)
    # An interrupt stops a sweep too (the user asked to stop); failed/gated jobs let it go on.
    if result.exit_code == EXIT_INTERRUPTED or (hc.mode != RunMode.MULTIRUN and result.exit_code != 0):
        sys.exit(result.exit_code)
    return optimized_value(cfg, result)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # outside a run (composing the config, between sweep jobs): no traceback
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
