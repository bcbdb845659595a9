"""local_hf through the generation engine: real batches, real token counts, clear config errors."""
from __future__ import annotations

import shutil

import pytest

from runner.core.stage import ConfigError
from runner.engine import Request, generate
from runner.lm.generate import generate_torch
from runner.providers.local_hf import LocalHFProvider
from tests.lm.tiny_lm import conversations, tiny_model, tiny_model_dir  # noqa: F401 (fixtures)


class CountingProvider(LocalHFProvider):
    """Records the size of every batch the engine hands over."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[int] = []

    def complete_batch(self, requests):
        self.batches.append(len(requests))
        return super().complete_batch(requests)


def test_engine_batches_and_counts(tiny_model_dir, tiny_model, tmp_path):
    convs = conversations(7)
    provider = CountingProvider(str(tiny_model_dir), batch_size=3, max_tokens=8, device="cpu", dtype="float32")
    requests = [Request(id=f"r{i}", messages=c) for i, c in enumerate(convs)]
    result = generate(provider, requests, cache_dir=tmp_path / "cache", desc="test", progress=False)
    assert provider.batches == [3, 3, 1]  # one generate call per batch of up to batch_size
    assert [r.id for r in result.responses] == [r.id for r in requests]
    direct = generate_torch(*tiny_model, convs, max_new_tokens=8, batch_size=1)
    assert [r.text for r in result.responses] == [g.text for g in direct]
    assert [r.tokens_out for r in result.responses] == [g.tokens_out for g in direct]
    assert [r.tokens_in for r in result.responses] == [g.tokens_in for g in direct]
    assert result.stats["tokens_out"] == sum(g.tokens_out for g in direct)
    assert all(r.error is None for r in result.responses)


def test_concurrent_batches_through_the_engine_give_the_same_answers(tiny_model_dir, tiny_model, tmp_path):
    """concurrency=3: the engine decodes 3 batches at once (one torch thread each on a CPU)."""
    import torch

    convs = conversations(10)
    threads = torch.get_num_threads()
    provider = CountingProvider(str(tiny_model_dir), batch_size=2, max_tokens=8, device="cpu", dtype="float32",
                                concurrency=3)
    seen = []
    original = provider.complete_batch

    def spy(requests):
        seen.append(torch.get_num_threads())
        return original(requests)

    provider.complete_batch = spy
    requests = [Request(id=f"r{i}", messages=c) for i, c in enumerate(convs)]
    result = generate(provider, requests, cache_dir=tmp_path / "cache", desc="test", progress=False)
    direct = generate_torch(*tiny_model, convs, max_new_tokens=8, batch_size=1)
    assert [r.text for r in result.responses] == [g.text for g in direct]
    assert sorted(provider.batches) == [2] * 5 and set(seen) == {1}
    assert torch.get_num_threads() == threads  # restored when the engine is done


def test_cache_key_follows_the_weights(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    same = LocalHFProvider(str(copy)).cache_identity()["weights"]
    assert same == LocalHFProvider(str(tiny_model_dir)).cache_identity()["weights"]
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one changed bit in the weights -> a different cache identity
    weights.write_bytes(bytes(data))
    assert LocalHFProvider(str(copy)).cache_identity()["weights"] != same


@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 4, "backend": "mlx"}, "concurrency=1"),
    ({"temperature": 0.7}, "greedily"),
    ({"backend": "vllm"}, "backend"),
])
def test_config_errors(tiny_model_dir, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LocalHFProvider(str(tiny_model_dir), **kwargs).validate()


def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="neither an existing folder nor a hub id"):
        LocalHFProvider(str(tmp_path / "no" / "such" / "model")).validate()
