"""Every experiment composes with the Hydra compose API (struct mode, all groups resolvable)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert "wikisql_1k" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name="config", overrides=[f"+experiment={name}"])
    assert OmegaConf.is_struct(cfg)
    assert cfg.pipeline.stages, "an experiment must have stages"
    OmegaConf.resolve(cfg)  # every interpolation resolves
    for name_, stage in cfg.pipeline.stages.items():
        if stage is None:  # an experiment removed an inherited stage (runner.pipeline skips it)
            assert name_ not in (cfg.pipeline.get("order") or []), f"{name_} is null but listed in pipeline.order"
            continue
        assert "_target_" in stage, name_


def test_unknown_key_is_rejected():
    from hydra.errors import ConfigCompositionException

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        with pytest.raises(ConfigCompositionException):
            compose(config_name="config", overrides=["+experiment=wikisql_1k", "trainer.learnign_rate=1"])


def test_configs_hold_no_secret_values():
    import re

    for p in (REPO / "conf").rglob("*.yaml"):
        text = p.read_text()
        assert not re.search(r"sk-[A-Za-z0-9-]{20,}", text), p
        for line in text.splitlines():
            if re.match(r"\s*api_key\s*:", line):
                raise AssertionError(f"{p}: configs hold api_key_env (a variable name), not api_key")
