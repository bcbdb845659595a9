"""Every conf/provider preset composes, instantiates, validates, and keeps secrets out of its identity."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner.core.stage import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


def provider_from(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=list(overrides))
    return instantiate(OmegaConf.to_container(cfg.provider, resolve=True), _convert_="all")


@pytest.mark.parametrize("name, key_env", [("openrouter", "OPENROUTER_API_KEY"), ("openai", "OPENAI_API_KEY"),
                                           ("ollama", None), ("vllm", None)])
def test_litellm_presets(name, key_env, monkeypatch):
    if key_env:
        monkeypatch.delenv(key_env, raising=False)
        with pytest.raises(ConfigError, match=key_env):
            provider_from(f"provider={name}").validate()
        monkeypatch.setenv(key_env, "sk-test-secret-0123456789")
    p = provider_from(f"provider={name}")
    p.validate()
    assert p.kind == "litellm" and "/" in p.model
    assert "sk-test-secret" not in repr(p.cache_identity())
    assert {"concurrency", "rpm", "tpm", "max_retries", "timeout_s", "cache"} <= set(vars(p))


def test_generic_litellm_needs_a_model():
    p = provider_from("provider=litellm", "provider.model=openai/some-model", "provider.api_base=http://h:1/v1")
    p.validate()
    assert p.cache_identity()["api_base"] == "http://h:1/v1"
    with pytest.raises(ConfigError, match="api_base"):
        provider_from("provider=litellm", "provider.model=openai/m", "provider.api_base=localhost:1").validate()


def test_simulated_is_the_default_and_labelled():
    p = provider_from()
    p.validate()
    assert p.kind == "simulated" and p.cache_identity()["kind"] == "simulated"
    assert provider_from("seed=3").sim_seed == 3  # follows the run seed
