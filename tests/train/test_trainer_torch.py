"""Torch trainer: full and LoRA training learn the toy task; resume; early stopping; outputs load."""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from runner.train.result import TrainPaths
from runner.train.trainer_torch import TorchTrainer
from tests.train.toy import toy_database

FAST = {"batch_size": 16, "warmup_steps": 5, "progress": False, "num_threads": 1, "max_grad_norm": 1.0}


def paths(root: Path) -> TrainPaths:
    return TrainPaths(model=root / "student_model", adapter=root / "student_adapter",
                      checkpoints=root / "ckpt", resume_dirs=[root / "ckpt"])


def losses(result) -> list[float]:
    return [r["loss"] for r in result.log if r["loss"] is not None]


@pytest.fixture(scope="module")
def full_run(toy_split, micro_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    # 150 steps at 1e-2: by then the student copies the column from the question (50 steps, or 5e-3,
    # leave it writing "city", the majority column, for every row). The switch is seed-sensitive:
    # measured over trainer seeds 0-4, seeds 0-3 make it by step 150 and seed 4 does not.
    trainer = TorchTrainer(method="full", max_steps=150, learning_rate=1e-2, eval_every=25, **FAST)
    return trainer.fit(*toy_split, micro_base, paths(out), seed=0), paths(out)


def test_full_training_learns_the_toy_task(full_run):
    result, p = full_run
    curve = losses(result)
    assert result.steps == 150 and len(curve) == 150
    # Far below its start: from ~log(vocab) = 5.9 to under a tenth of it (measured 0.16, seeds 0-3).
    assert sum(curve[-5:]) / 5 < 0.1 * curve[0], curve
    valid = [r["valid_loss"] for r in result.log if r["valid_loss"] is not None]
    assert valid[0] > 4.0 and result.best_valid_loss == min(valid) < 0.1 * valid[0], valid
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


def _skeleton_match_rate(sqls: list[str], golds: list[str]) -> float:
    """Exact match of whitespace-normalised SQL with string literals masked (Spider's match "without values").

    Values are masked because the micro student never learns to copy the WHERE name from the question
    (held-out exact match ~6% after the full run: it writes one or two names for every row); everything
    else (columns, table, clause order) must equal the gold.
    """
    def skeleton(sql: str) -> str:
        return re.sub(r"'[^']*'", "'?'", " ".join(sql.split()))
    return sum(skeleton(s) == skeleton(g) for s, g in zip(sqls, golds, strict=True)) / len(golds)


def test_training_raises_accuracy_on_held_out_rows(full_run, micro_base, toy_split, tmp_path):
    _, p = full_run
    held_out = toy_split[1]
    gold = [r["messages"][-1]["content"] for r in held_out]
    pre_sql, post_sql = _generate_sql(micro_base, held_out), _generate_sql(p.model, held_out)
    # Skeleton match: right column, table and clauses. 0.9 is above what the majority column alone
    # scores (59% of these rows ask for "city"), so it needs the column read from the question.
    pre, post = _skeleton_match_rate(pre_sql, gold), _skeleton_match_rate(post_sql, gold)
    assert post > pre and post >= 0.9, (pre, post)  # measured 0.0 -> 1.0
    db = toy_database(tmp_path / "toy.db")
    pre_exec, post_exec = _exec_pass_rate(pre_sql, db), _exec_pass_rate(post_sql, db)
    assert post_exec > pre_exec and post_exec >= 0.8, (pre_exec, post_exec)


def _whole_row(row: dict) -> dict:
    """Task B for LoRA: return the whole matching row instead of the asked column.

    `SELECT "city"` becomes `SELECT "name", "city", "age"`: eight answer tokens the pretrained student
    has never produced there (it always emits FROM after one column). They are all tokens it reads in
    the schema, so their tied embeddings are trained; a suffix such as ` LIMIT 1` is not: its bytes
    never occur in the toy text, and LoRA, which freezes the embeddings, cannot learn to emit them.
    """
    sql = re.sub(r'^SELECT "\w+"', 'SELECT "name", "city", "age"', row["messages"][-1]["content"])
    return {"messages": [*row["messages"][:-1], {"role": "assistant", "content": sql}]}


def test_lora_learns_on_a_pretrained_student_and_merges(full_run, toy_split, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # LoRA adapts a pretrained model (the fully trained toy student) to a changed task. It cannot
    # start from random weights: untrained tied embeddings are too small to give confident logits.
    _, pretrained = full_run
    train_b, valid_b = ([_whole_row(r) for r in part] for part in toy_split)
    trainer = TorchTrainer(method="lora", lora={"rank": 8, "alpha": 16, "dropout": 0.0,
                                                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj"]},
                           max_steps=40, learning_rate=1e-2, eval_every=40, **FAST)
    result = trainer.fit(train_b, valid_b, pretrained.model, paths(tmp_path), seed=0)

    # Loss falls far below its start, on the training batches and on held-out task-B rows (measured
    # 2.9-3.5 -> 0.21-0.31 nats/token, ratio 0.07-0.09, LoRA seeds 0-2). What is left is mostly the
    # WHERE name the micro student cannot copy (~2.6 nats on one token of 22), which LoRA cannot fix.
    curve = losses(result)
    assert sum(curve[-3:]) / 3 < 0.15 * curve[0], curve
    valid = [r["valid_loss"] for r in result.log if r["valid_loss"] is not None]
    assert valid[-1] < 0.15 * valid[0], valid

    # Accuracy on held-out task-B rows: the pretrained student writes task A's SQL, the merged one B's.
    gold_b = [r["messages"][-1]["content"] for r in valid_b]
    pre = _skeleton_match_rate(_generate_sql(pretrained.model, valid_b), gold_b)
    post = _skeleton_match_rate(_generate_sql(tmp_path / "student_model", valid_b), gold_b)
    assert post > pre and post >= 0.9, (pre, post)  # measured 0.0 -> 1.0, LoRA seeds 0-2

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
