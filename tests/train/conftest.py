"""Fixtures shared by the trainer tests: a KD teacher for the session's micro student."""
from __future__ import annotations

from pathlib import Path

import pytest

from runner.lm.scratch import ScratchStudent
from runner.student.kd_stages import build_with_tokenizer
from tests.conftest import MICRO


@pytest.fixture(scope="session")
def micro_teacher(tmp_path_factory, micro_base) -> Path:
    """A second micro model with the SAME tokenizer as micro_base (different weights): the teacher."""
    out = tmp_path_factory.mktemp("kdteacher") / "teacher"
    student = ScratchStudent("micro", {"micro": MICRO}, max_position_embeddings=256)
    build_with_tokenizer(student, micro_base, out, seed=7)
    return out
