"""Scratch student: tokenizer + chat template, sizes, the HF folder, config composition and validation."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner import pipeline
from runner.core.stage import ConfigError
from runner.lm.scratch import ScratchStudent
from runner.lm.tokenizer import train_bpe_tokenizer
from runner.student.stages import Train
from runner.train.chat_data import IGNORE, collate, encode_chat, encode_rows
from runner.train.trainer_mlx import MlxTrainer
from runner.train.trainer_torch import TorchTrainer
from tests.train.toy import toy_rows

CONF = Path(__file__).resolve().parents[2] / "conf"
MINE = ("student_init", "train")


def test_tokenizer_chat_template_masks_only_the_answer():
    rows = toy_rows(40)
    tok = train_bpe_tokenizer((m["content"] for r in rows for m in r["messages"]), vocab_size=300)
    msgs = rows[0]["messages"]
    prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and prompt.startswith("<|im_start|>system\n")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    ex = encode_chat(tok, msgs)
    ids, mask, labels = collate([ex], tok.pad_token_id)
    answer = tok.decode([t for t in labels[0].tolist() if t != IGNORE])
    assert answer == msgs[-1]["content"] + "<|im_end|>\n"  # the answer and its end-of-turn, nothing else
    assert (labels[0, :ex.prompt_len] == IGNORE).all()
    # byte-level: any text round-trips, even characters never seen in training
    odd = "SELECT \"año\" FROM t WHERE x = 'Ünïcode ✓'"
    assert tok.decode(tok.encode(odd)) == odd


def test_rows_longer_than_max_seq_length_are_skipped_not_truncated():
    rows = toy_rows(10)
    tok = train_bpe_tokenizer((m["content"] for r in rows for m in r["messages"]), vocab_size=300)
    n = len(encode_chat(tok, rows[0]["messages"]).input_ids)
    kept, dropped = encode_rows(tok, rows, max_seq_length=n - 1)
    assert all(len(e.input_ids) <= n - 1 for e in kept) and dropped == len(rows) - len(kept) > 0


@pytest.mark.parametrize("size,lo,hi", [("tiny", 0.9e6, 2.0e6), ("small", 6.0e6, 8.0e6)])
def test_configured_sizes(size, lo, hi):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = OmegaConf.load(CONF / "student" / "scratch.yaml")
    arch = OmegaConf.to_container(cfg.sizes[size])
    with torch.device("meta"):  # count parameters without allocating them
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=cfg.tie_word_embeddings, **arch))
    assert lo <= sum(p.numel() for p in model.parameters()) <= hi


def test_student_base_is_a_loadable_hf_folder(micro_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in micro_base.iterdir()}
    tok = AutoTokenizer.from_pretrained(micro_base)
    ids = tok.apply_chat_template(toy_rows(1)[0]["messages"][:-1], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    assert model.config.model_type == "llama"
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    assert model(**ids).logits.shape[-1] == model.config.vocab_size


def test_lora_on_a_scratch_student_is_a_config_error():
    student = ScratchStudent("x", {"x": {}})
    for trainer in (TorchTrainer(method="lora", lora={"rank": 4, "alpha": 8, "dropout": 0.0,
                                                      "target_modules": ["q_proj"]}),
                    MlxTrainer(method="dora")):
        stage = Train(trainer=trainer, student=student)
        stage.name = "train"
        with pytest.raises(ConfigError, match="trainer.method=full"):
            stage.validate(None)
    assert "student_adapter/" in Train(trainer=MlxTrainer(method="lora"), student=student).writes


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    others = [n for n in cfg.pipeline.stages if n not in MINE]
    cfg.pipeline.skip = others
    return cfg


def test_default_config_builds_the_student_stages_and_none_removes_them():
    planned = {p.name: p.stage for p in pipeline.build(_compose().pipeline)}
    assert set(planned) == set(MINE)
    assert isinstance(planned["student_init"].student, ScratchStudent)
    assert planned["train"].trainer.backend in ("torch", "mlx")  # auto: mlx only on Apple silicon
    with pytest.raises(ConfigError, match="no enabled stage"):  # trainer=none switches both off
        pipeline.build(_compose("trainer=none").pipeline)


def test_lora_on_scratch_fails_from_the_command_line_config():
    cfg = _compose("trainer=torch", "trainer.method=lora")
    train = {p.name: p.stage for p in pipeline.build(cfg.pipeline)}["train"]
    with pytest.raises(ConfigError, match="trainer.method=full"):
        train.validate(None)


def test_hf_student_links_a_local_folder_and_rejects_a_non_model_folder(micro_base, tmp_path):
    from runner.lm.hf import HFStudent

    student = HFStudent(model=str(micro_base))
    student.validate("student_init")
    out = tmp_path / "student_base"
    info = student.build([], out, seed=0)
    assert out.is_symlink() and out.resolve() == micro_base.resolve() and info["linked"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        HFStudent(model=str(tmp_path / "empty")).validate("student_init")
