"""Torch trainer: full and LoRA training learn the toy task; resume; early stopping; outputs load."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runner.student.toy import toy_database
from runner.student.train_result import TrainPaths
from runner.student.trainer_torch import TorchTrainer

FAST = {"batch_size": 16, "warmup_steps": 5, "progress": False, "num_threads": 1, "max_grad_norm": 1.0}


def paths(root: Path) -> TrainPaths:
    return TrainPaths(model=root / "student_model", adapter=root / "student_adapter",
                      checkpoints=root / "ckpt", resume_dirs=[root / "ckpt"])


def losses(result) -> list[float]:
    return [r["loss"] for r in result.log if r["loss"] is not None]


@pytest.fixture(scope="module")
def full_run(toy_split, micro_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    trainer = TorchTrainer(method="full", max_steps=50, learning_rate=5e-3, eval_every=25, **FAST)
    return trainer.fit(*toy_split, micro_base, paths(out), seed=0), paths(out)


def test_full_training_learns_the_toy_task(full_run):
    result, p = full_run
    curve = losses(result)
    assert result.steps == 50 and len(curve) == 50
    assert sum(curve[-5:]) / 5 < 0.25 * curve[0], curve  # from ~log(vocab) to well below it
    valid = [r["valid_loss"] for r in result.log if r["valid_loss"] is not None]
    assert valid[0] > 4.0 and result.best_valid_loss == min(valid) < 0.3 * valid[0]
    assert result.tokens_per_s and result.tokens_per_s > 0 and result.params_trainable == result.params_total


def _generate_sql(model_dir: Path, rows: list[dict]) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False) for r in rows]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def _exec_pass_rate(sqls: list[str], db: Path) -> float:
    ok = 0
    with sqlite3.connect(db) as con:
        for sql in sqls:
            try:
                ok += bool(sql.strip()) and con.execute(sql).fetchall() is not None
            except sqlite3.Error:
                pass
    return ok / len(sqls)


def test_training_raises_execution_accuracy_on_held_out_rows(full_run, micro_base, toy_split, tmp_path):
    _, p = full_run
    db = toy_database(tmp_path / "toy.db")
    held_out = toy_split[1]
    pre = _exec_pass_rate(_generate_sql(micro_base, held_out), db)
    post = _exec_pass_rate(_generate_sql(p.model, held_out), db)
    assert post > pre and post >= 0.8, (pre, post)


def _select_name(row: dict) -> dict:
    """Task B for LoRA: always select the "name" column (a token the student already emits after WHERE)."""
    sql = row["messages"][-1]["content"].replace('SELECT "city"', 'SELECT "name"').replace('SELECT "age"', 'SELECT "name"')
    return {"messages": [*row["messages"][:-1], {"role": "assistant", "content": sql}]}


def test_lora_learns_on_a_pretrained_student_and_merges(full_run, toy_split, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # LoRA adapts a pretrained model (the fully trained toy student) to a changed task. It cannot
    # start from random weights: untrained tied embeddings are too small to give confident logits.
    full_result, pretrained = full_run
    train_b, valid_b = ([_select_name(r) for r in part] for part in toy_split)
    trainer = TorchTrainer(method="lora", lora={"rank": 8, "alpha": 16, "dropout": 0.0,
                                                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj"]},
                           max_steps=40, learning_rate=1e-2, eval_every=None, **FAST)
    result = trainer.fit(train_b, valid_b, pretrained.model, paths(tmp_path), seed=0)
    curve = losses(result)
    # Most of the toy loss is the name the micro student cannot yet copy, and it stays; LoRA must
    # remove the new error: end below the start and below the student's loss on the task it knows.
    known = sum(losses(full_result)[-5:]) / 5
    end = sum(curve[-3:]) / 3
    assert curve[0] > known and end < known and end < 0.8 * curve[0], (curve, known)
    assert 0 < result.params_trainable < 0.5 * result.params_total and result.merged
    assert (tmp_path / "student_adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "student_model").eval()
    assert not any("lora" in k for k in merged.state_dict())
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(pretrained.model),
                                        tmp_path / "student_adapter").eval()
    ids = torch.tensor([[1, 5, 9, 30, 60, 90]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)


def test_resume_continues_the_step_count_and_the_same_trajectory(toy_split, micro_base, tmp_path):
    cfg = dict(method="full", learning_rate=3e-3, lr_schedule="constant", eval_every=None, checkpoint_every=3, **FAST)
    first = TorchTrainer(max_steps=6, **cfg).fit(*toy_split, micro_base, paths(tmp_path / "a"), seed=0)
    assert sorted(p.name for p in (tmp_path / "a" / "ckpt").iterdir()) == ["step_0000003.pt", "step_0000006.pt"]
    resumed = TorchTrainer(max_steps=8, **cfg).fit(*toy_split, micro_base, paths(tmp_path / "a"), seed=0)
    straight = TorchTrainer(max_steps=8, **cfg).fit(*toy_split, micro_base, paths(tmp_path / "b"), seed=0)
    assert first.steps == 6 and resumed.resumed_from_step == 6 and resumed.steps == 8
    assert [r["step"] for r in resumed.log] == list(range(1, 9))
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)


def test_early_stopping_stops_when_validation_does_not_improve(toy_split, micro_base, tmp_path):
    trainer = TorchTrainer(max_steps=50, learning_rate=1e-9, eval_every=2, early_stopping_patience=1,
                           early_stopping_min_delta=1e-3, **FAST)
    result = trainer.fit(*toy_split, micro_base, paths(tmp_path), seed=0)
    assert result.stopped_early and result.steps == 2
