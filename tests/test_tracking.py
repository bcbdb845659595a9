"""logger=mlflow: a run mirrored into a local MLflow folder store (skipped without mlflow)."""
from __future__ import annotations

import pytest

from tests.conftest import REPO, read_metrics, run_cli

# Absolute: the CLI runs from a temporary folder (tests.conftest.run_cli).
DEMO = [f"hydra.searchpath=[file://{REPO}/tests/conf]", "pipeline=core_demo"]


def test_logger_mlflow_logs_params_metrics_artifacts_and_no_secret(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (optional extra: pip install -e '.[mlflow]')")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the runner opts in by itself
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    secret = "sk-or-v1-" + "fedcba9876543210" * 4
    proc, run_dir = run_cli([*DEMO, "seed=5", "logger=mlflow", f"logger.tracking_uri={store}"], tmp_path,
                            env={"OPENROUTER_API_KEY": secret, "CORE_TEST_LOG_ENV": "OPENROUTER_API_KEY"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client below
    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name("default")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["seed"] == "5" and run.data.params["pipeline"] == "core_demo"
    m = read_metrics(run_dir)
    assert run.data.metrics["summary.mean_x"] == pytest.approx(m["summary.mean_x"])
    assert run.data.tags["status"] == "ok" and run.info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "timing.json", "run.log"} <= logged
    for p in store.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_logger_mlflow_without_the_package_fails_before_work(tmp_path):
    try:
        import mlflow  # noqa: F401
        pytest.skip("mlflow is installed: the missing-package path cannot be exercised")
    except ImportError:
        pass
    proc, run_dir = run_cli([*DEMO, "logger=mlflow"], tmp_path)
    assert proc.returncode == 1
    m = read_metrics(run_dir)
    assert m["status"] == "failed" and "pip install -e '.[mlflow]'" in m["error"]
    assert "make.rows" not in m  # no stage ran
