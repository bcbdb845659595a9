"""mlx-lm trainer on Linux CPU: a few iterations give a model/adapter that mlx-lm and transformers load."""
from __future__ import annotations

import importlib.util
import json

import pytest

from runner.train.result import TrainPaths
from runner.train.trainer_mlx import MlxTrainer
from tests.train.toy import toy_rows

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None,
                                reason="mlx-lm is not installed (pip install 'mlx[cpu]' mlx-lm on Linux)")


def _paths(root):
    return TrainPaths(model=root / "student_model", adapter=root / "student_adapter", checkpoints=root / "ckpt",
                      resume_dirs=[root / "ckpt"])


def _generate(model_dir, adapter=None) -> str:
    from mlx_lm import generate, load

    model, tok = load(str(model_dir), adapter_path=str(adapter) if adapter else None)
    prompt = tok.apply_chat_template(toy_rows(1)[0]["messages"][:-1], add_generation_prompt=True)
    return generate(model, tok, prompt, max_tokens=6)


def test_mlx_full_training_saves_a_loadable_model(toy_split, micro_base, tmp_path):
    trainer = MlxTrainer(method="full", num_layers=-1, iters=6, batch_size=8, learning_rate=3e-3,
                         steps_per_eval=3, val_batches=2, save_every=3)
    result = trainer.fit(*toy_split, micro_base, _paths(tmp_path), seed=0)
    loss = [r["loss"] for r in result.log if r["loss"] is not None]
    assert result.steps == 6 and len(loss) == 6 and loss[-1] < loss[0]
    assert result.best_valid_loss is not None and result.tokens > 0 and result.tokens_per_s > 0
    assert result.params_trainable == result.params_total  # num_layers=-1: embeddings train too
    assert isinstance(_generate(tmp_path / "student_model"), str)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "student_model")  # the same folder loads in transformers


def test_mlx_lora_saves_adapter_and_fused_model(toy_split, micro_base, tmp_path):
    trainer = MlxTrainer(method="lora", num_layers=2, iters=3, batch_size=8, learning_rate=1e-3,
                         steps_per_eval=10, val_batches=1, save_every=10, lora={"rank": 4, "scale": 10.0, "dropout": 0.0})
    result = trainer.fit(*toy_split, micro_base, _paths(tmp_path), seed=0)
    assert result.steps == 3 and result.merged and 0 < result.params_trainable
    cfg = json.loads((tmp_path / "student_adapter" / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "lora" and (tmp_path / "student_adapter" / "adapters.safetensors").exists()
    assert isinstance(_generate(micro_base, adapter=tmp_path / "student_adapter"), str)
    assert isinstance(_generate(tmp_path / "student_model"), str)


def test_mlx_valid_set_smaller_than_a_batch_gives_null_loss_with_reason(toy_split, micro_base, tmp_path):
    # mlx-lm validates in full batches only: 3 valid rows cannot fill a batch of 8.
    trainer = MlxTrainer(method="full", num_layers=-1, iters=1, batch_size=8, steps_per_eval=1, val_batches=1)
    result = trainer.fit(toy_split[0], toy_split[1][:3], micro_base, _paths(tmp_path), seed=0)
    assert result.steps == 1 and result.best_valid_loss is None
    assert "3 valid.jsonl rows" in result.valid_loss_reason and "batch_size=8" in result.valid_loss_reason
