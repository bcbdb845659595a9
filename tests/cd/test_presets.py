"""The seed v1 -> v2 sweep preset: both points compose, build, and carry the seed's settings."""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner import pipeline
from runner.cd.report import distill_cost
from tests.conftest import REPO


def compose_preset(choice: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(config_name="config", overrides=["+experiment=burgers_cd_seed_v1v2",
                                                        f"consistency_distill={choice}"], return_hydra_config=True)


def test_v1v2_preset_sweeps_the_seed_settings_and_reproduces_its_formula():
    cfg = compose_preset("seed_v1")
    assert list(cfg.hydra.sweeper.params.keys()) == ["consistency_distill"]
    assert cfg.hydra.sweeper.params.consistency_distill == "seed_v1,seed_v2"
    per_epoch = {}
    for choice, expected in (("seed_v1", (6, 3, 5, 1)), ("seed_v2", (12, 4, 4, 2))):
        cfg = compose_preset(choice)
        planned = pipeline.build(cfg.pipeline)
        cd = next(p.stage.cd for p in planned if p.name == "consistency_distill")
        assert (cd.batch_size, cd.micro_batch, cd.num_taus, cd.accum_steps) == expected
        assert cd.epochs == 10 and OmegaConf.select(cfg, "dataset.n_train") == 2000
        cost = distill_cost(cd, cd.optimizer_steps(2000), 2000, macs_per_row=1)
        per_epoch[choice] = (cost["seed_formula_per_epoch"], cost["true_student_rows_per_epoch"])
    # The seed's 3,330 -> 2,004 (-40 %) against the rows the student really processes (-20 %).
    assert per_epoch == {"seed_v1": (3330, 10000), "seed_v2": (2004, 8000)}


def test_v1v2_sweep_runs_both_jobs_end_to_end(tmp_path):
    """The one-command comparison (-m) at toy sizes: two jobs, each with its cost accounting."""
    import json

    from tests.conftest import run_cli

    tiny = ["dataset.n_train=48", "dataset.n_test=16", "pipeline.net.width=32", "pipeline.net.depth=2",
            "pipeline.stages.operator.steps=20", "pipeline.stages.diffusion_teacher.steps=20",
            "consistency_distill.epochs=1", "pipeline.stages.cd_eval.curve_steps=[1,2]",
            "pipeline.stages.cd_eval.teacher_steps=3", "pipeline.stages.cd_eval.teacher_lowstep_steps=2",
            "pipeline.stages.cd_eval.ensemble_k=2", "pipeline.stages.cd_eval.timing_repeats=1",
            "pipeline.stages.cd_eval.min_timing_s=0.0"]
    proc, sweep = run_cli(["-m", "+experiment=burgers_cd_seed_v1v2", *tiny], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert [m["status"] for m in metrics] == ["ok", "ok"]
    v1, v2 = metrics
    # The seed's launch-count formula vs the rows the student really processes, per epoch of 48 samples.
    assert v1["cd.forward_passes_seed_formula"] > v2["cd.forward_passes_seed_formula"]
    assert v1["cd.true_student_rows_per_epoch"] == 48 * 5 and v2["cd.true_student_rows_per_epoch"] == 48 * 4
