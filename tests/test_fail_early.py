"""Everything that can fail on configuration fails at validation, before the first teacher call,
with metrics.json, `failed_stage` and keys named as the user types them; no raw traceback."""
from __future__ import annotations

import logging
import socket

import pytest

from runner.core.stage import ConfigError
from runner.engine.progress import GenerationProgress
from tests.cli_tmp import metrics, run_in_tmp
from tests.conftest import requires_data

pytestmark = requires_data


def fails_at_validation(tmp_path, *args, **env) -> dict:
    proc, run_dir = run_in_tmp(["+experiment=wikisql_smoke", *args], tmp_path, **env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    m = metrics(run_dir)
    assert m["status"] == "failed" and "teacher.requests" not in m  # nothing was sent
    return m


def test_hub_student_offline_without_cache_fails_before_the_teacher(tmp_path):
    m = fails_at_validation(tmp_path, "student=hf", "student.model=Qwen/Qwen2.5-0.5B-Instruct",
                            HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    assert m["failed_stage"] == "student_init"
    assert "'Qwen/Qwen2.5-0.5B-Instruct'" in m["error"] and "HF_HUB_OFFLINE" in m["error"]
    assert "local/folder" in m["error"]


def test_hub_student_with_the_hub_unreachable_is_a_config_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from runner.lm.hf import HFStudent

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ConfigError, match="hub is unreachable"):
        HFStudent("some-org/some-model").validate("student_init")


def test_judge_none_names_both_score_thresholds_and_the_suggested_fix_works(tmp_path):
    m = fails_at_validation(tmp_path / "a", "judge=none", "trainer=none")
    assert "gate.min_judge_mean=0.4" in m["error"] and "filters.min_score=0" in m["error"]
    assert m["failed_stage"] == "teacher"
    m = fails_at_validation(tmp_path / "b", "judge=none", "trainer=none", "gate.min_judge_mean=0")
    assert "filters.min_score=0.5" in m["error"] and "gate.min_judge_mean" in m["error"]
    assert m["failed_stage"] == "filter"
    proc, run_dir = run_in_tmp(["+experiment=wikisql_smoke", "judge=none", "trainer=none", "gate.min_judge_mean=0",
                                "filters.min_score=0"], tmp_path / "c")
    m = metrics(run_dir)
    assert proc.returncode == 0 and m["status"] == "ok" and m["filter.kept"] > 0


def test_a_seed_that_is_not_a_number_is_a_config_error_with_metrics(tmp_path):
    m = fails_at_validation(tmp_path, "seed=abc")
    assert "seed='abc' must be an integer" in m["error"] and m["failed_stage"] == "config" and m["seed"] == "abc"


@pytest.mark.parametrize("override,key,stage", [
    ("trainer.torch.batch_size=0", "trainer.torch.batch_size=0", "train"),  # trainer=auto (the default)
    ("pipeline.stages.student_pre.batch_size=0", "pipeline.stages.student_pre.batch_size=0", "student_pre"),
    ("pipeline.stages.prompt.template.rows_k=-1", "pipeline.stages.prompt.template.rows_k=-1", "prompt"),
])
def test_config_errors_name_keys_as_typed_and_the_stage(tmp_path, override, key, stage):
    m = fails_at_validation(tmp_path, override)
    assert key in m["error"] and m["failed_stage"] == stage, m["error"]


def test_progress_is_logged_when_stderr_is_not_a_terminal(caplog):
    log = logging.getLogger("test.progress")
    bar = GenerationProgress(100, "teacher", True, log, min_gap_s=0.0)  # pytest's stderr is not a tty
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for _ in range(100):
            bar.advance(1, sent=True, tokens=10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[0].startswith("teacher: 10/100 (10%)") and "req/s" in lines[0]
    quiet = GenerationProgress(100, "teacher", True, log)  # a fast run: no line before 5 s have passed
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for _ in range(100):
            quiet.advance(1)
    assert len(caplog.records) == 10


def test_a_decoding_constraint_that_cannot_read_the_prompt_fails_before_the_teacher(tmp_path):
    m = fails_at_validation(tmp_path / "a", "pipeline.constrain=wikisql",
                            "pipeline.stages.prompt.template.user='{schema}\n{rows}\nQ: {question}'")
    assert m["failed_stage"] == "prompt"
    assert "Question: {question}" in m["error"] and "pipeline.constrain=null" in m["error"]
    m = fails_at_validation(tmp_path / "b", "pipeline.constrain=sql")
    assert m["failed_stage"] == "prompt" and "pipeline.constrain='sql'" in m["error"] and "wikisql" in m["error"]


def test_a_kd_teacher_set_with_kd_disabled_fails_before_the_teacher(tmp_path):
    """It used to train plain SFT and say nothing."""
    m = fails_at_validation(tmp_path, "trainer=torch", "trainer.kd.teacher=/some/teacher", "trainer.kd.alpha=0.3")
    assert "trainer.kd.enabled=true" in m["error"] and "kd.teacher" in m["error"]
