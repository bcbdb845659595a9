"""Fixtures for the student tests: the toy Text2SQL task and a micro scratch student (~100k params)."""
from __future__ import annotations

from pathlib import Path

import pytest

from runner.student.scratch import ScratchStudent
from runner.student.toy import toy_rows, write_jsonl

# Small enough that a few dozen CPU steps learn the toy task; tests/student only.
MICRO = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
         "intermediate_size": 128, "vocab_size": 384}


@pytest.fixture(scope="session")
def toy_split():
    rows = toy_rows(160, seed=0)
    return rows[:128], rows[128:]


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory, toy_split) -> Path:
    """A micro scratch student (tokenizer trained on the toy training chats), saved as a HF folder."""
    out = tmp_path_factory.mktemp("micro") / "student_base"
    ScratchStudent("micro", {"micro": MICRO}, max_position_embeddings=256).build(toy_split[0], out, seed=0)
    return out


@pytest.fixture(scope="session")
def toy_run_dir(tmp_path_factory, toy_split, micro_base) -> Path:
    """A run folder holding what the Text2SQL stages and student_init would have written."""
    run = tmp_path_factory.mktemp("toyrun")
    art = run / "artifacts"
    write_jsonl(toy_split[0], art / "train.jsonl")
    write_jsonl(toy_split[1], art / "valid.jsonl")
    (art / "student_base").symlink_to(micro_base, target_is_directory=True)
    return run
