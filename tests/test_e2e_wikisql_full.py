"""wikisql_full, wikisql_scaling and wikisql_filter_ablation through the CLI at smoke size: the
commands users type (README), with size overrides only. What they must hold whatever the size:
the checkpoint is chosen on a dev split of train tables (never an eval row or table), the sweeps
run on Hydra's default folders, the oracle is labelled, and the report draws the reference lines."""
from __future__ import annotations

import json
import zlib

import polars as pl
import pytest

from runner.report import build_report
from runner.text2sql.grammar import WikiSqlGrammar, prompt_parts
from tests.conftest import read_metrics, requires_data, run_cli
from tests.docs_clone import FULL, DocsClone, argv_of, shared_root

pytestmark = requires_data

# trainer=torch in these experiments: its keys are trainer.X. FULL (tests/docs_clone.py): tiny sizes,
# 6 steps validated every 3, 8 dev rows; the sizes of the docs' runs the first tests read.


def jobs(sweep):
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def docs_run(tmp_path_factory, cmd: str):
    """The docs' command at smoke size, run once per session (shared with the README-commands test)."""
    run = DocsClone(shared_root(tmp_path_factory)).run(argv_of(cmd))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.folder


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The docs' wikisql_full command at smoke size, read by the checkpoint test and used as the
    logit-KD teacher."""
    return docs_run(tmp_path_factory, "python -m runner +experiment=wikisql_full")


def test_wikisql_full_picks_its_checkpoint_on_train_tables_only(full_run):
    run = full_run
    m = read_metrics(run)
    assert m["status"] == "ok" and m["train.checkpoint"] == "dev_gold" and m["train.dev_rows"] > 0
    assert m["train.best_step"] in (3, 6) and m["train.dev_gold"] is not None
    log = pl.read_parquet(run / "artifacts" / "train_log.parquet")
    assert log.filter(pl.col("dev_gold").is_not_null())["step"].to_list() == [0, 3, 6]
    # the dev rows are distilled valid rows: train tables, never an eval row or an eval table
    art = run / "artifacts"
    prompts = pl.read_parquet(art / "prompts.parquet")
    dev = pl.read_parquet(art / "distilled.parquet").filter(pl.col("ft_split") == "valid").head(m["train.dev_rows"])
    ev = prompts.filter(pl.col("split") == "eval")
    assert dev.height == m["train.dev_rows"]
    assert not set(dev["table_id"]) & set(ev["table_id"]) and not set(dev["sample_id"]) & set(ev["sample_id"])
    # eval tables appear in no training, dev or valid row
    train_tables = set(prompts.filter(pl.col("split") == "train")["table_id"])
    assert not train_tables & set(ev["table_id"])
    assert not prompts["user"].str.contains("/* first", literal=True).any()  # rows_k=0: schema only
    tok = json.loads((art / "student_base" / "tokenizer.json").read_text())
    assert "Split" in json.dumps(tok["pre_tokenizer"])  # the words pre-tokenizer
    # constrained decoding, labelled, with the plain-greedy twin on the same rows
    assert m["student_pre.decoding"] == m["student_post.decoding"] == m["compare.student_decoding"] == "greedy+wikisql"
    assert m["student_post_plain.decoding"] == "greedy" and m["student_post_plain.rows"] == m["student_post.rows"]
    # compare runs after the plain twin: the like-for-like pair is tested, and retention says it is not
    assert m["compare.post_plain_vs_teacher.rows"] == m["student_post.rows"] > 0
    assert m["compare.post_plain_vs_teacher.gold_match_p_mcnemar"] is not None
    assert m["compare.retention_like_for_like"] is False
    for user, text in pl.read_parquet(art / "student_post.parquet").select("user", "generation").iter_rows():
        assert WikiSqlGrammar(*prompt_parts(user)).state(text.encode())[0], text


def test_scaling_sweep_runs_on_default_folders_and_plots_against_n_train(tmp_path_factory):
    sweep = docs_run(tmp_path_factory, "python -m runner -m +experiment=wikisql_scaling")  # n_train=40,80
    assert sweep.parent.parent.name == "wikisql_scaling" and sweep.parts[-4] == "multirun"
    ms = [read_metrics(j) for j in jobs(sweep)]
    assert [m["load.train"] for m in ms] == [40, 80] and all(m["status"] == "ok" for m in ms)
    assert all(m["compare.teacher_gold_match_rate"] is not None for m in ms)
    report = build_report([sweep])
    png = report.out_dir / "report_plots" / "student_post.gold_match_rate__vs__dataset.n_train.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_filter_ablation_labels_the_oracle(tmp_path_factory):
    sweep = docs_run(tmp_path_factory, "python -m runner -m +experiment=wikisql_filter_ablation")  # seed=0
    by_name = {m["filter.name"]: m for m in (read_metrics(j) for j in jobs(sweep))}
    assert set(by_name) == {"none", "default", "oracle"}
    oracle = by_name["oracle"]
    assert oracle["filter.oracle"] is True and any("ORACLE" in n for n in oracle["run.notices"])
    assert oracle["distilled.gold_match_rate"] == 1.0
    assert by_name["none"]["filter.oracle"] is False and not any("ORACLE" in n for n in by_name["none"]["run.notices"])
    # no filter keeps the most rows, the oracle the fewest
    assert by_name["none"]["distilled.count"] >= by_name["default"]["distilled.count"] > oracle["distilled.count"]


@pytest.mark.slow
def test_logit_kd_full_learns_from_a_wikisql_full_student(tmp_path, full_run):
    """wikisql_logit_kd_full as the README shows it: the teacher is an earlier wikisql_full run's
    student (pipeline.reuse_from), evaluated again on the same held-out rows; the student shares its
    tokenizer; without a teacher run the command fails in seconds, naming the fix. (A teacher trained
    on this run's eval tables is refused: tests/train/test_kd.py.)"""
    teacher_run = full_run
    t = read_metrics(teacher_run)
    reuse = f"pipeline.reuse_from=[{teacher_run}]"
    proc, run = run_cli(["+experiment=wikisql_logit_kd_full", reuse, "dataset.n_train=80", *FULL], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run)
    assert m["status"] == "ok" and m["train.steps"] == 6 and m["train.kd_alpha"] == 0.5
    # the same model on the same held-out rows with the same decoding (plain greedy: the teacher
    # run's student_post_plain, not its constrained student_post) writes the same answers, row by row
    assert m["kd_teacher_eval.decoding"] == t["student_post_plain.decoding"] == "greedy"
    for key in ("gold_match_rate", "exec_pass_rate", "rows"):
        assert m[f"kd_teacher_eval.{key}"] == t[f"student_post_plain.{key}"], key
    ours = pl.read_parquet(run / "artifacts" / "kd_teacher_eval.parquet").select("sample_id", "generation")
    theirs = pl.read_parquet(teacher_run / "artifacts" / "student_post_plain.parquet").select("sample_id", "generation")
    pairs = ours.join(theirs, on="sample_id", suffix="_t")
    assert pairs.height == m["kd_teacher_eval.rows"] > 0 and pairs["generation"].str.len_chars().sum() > 0
    assert pairs.filter(pl.col("generation") != pl.col("generation_t")).height == 0
    art = run / "artifacts"
    n_train = len((art / "train.jsonl").read_text().splitlines())
    assert m["train.kd_teacher_s"] > 0 and m["teacher_logits.rows"] == n_train - m["train.dropped_rows"] > 0
    assert (art / "student_base" / "tokenizer.json").read_bytes() == \
        (teacher_run / "artifacts" / "student_base" / "tokenizer.json").read_bytes()
    assert (teacher_run / "artifacts" / "student_model").exists()  # the teacher is read, never replaced
    assert any("KD teacher" in n for n in m["run.notices"])
    # the teacher's tables are checked right after load, before any teacher request
    stages = list(json.loads((run / "timing.json").read_text())["stages"])
    assert stages[:3] == ["load", "kd_teacher_check", "hash"] and stages.index("teacher") > 1
    assert "trained on none of this run's eval tables" in (run / "run.log").read_text()

    proc, none = run_cli(["+experiment=wikisql_logit_kd_full", "dataset.n_train=80", *FULL], tmp_path / "none")
    assert proc.returncode == 1
    m = read_metrics(none)
    assert "pipeline.reuse_from" in m["error"] and "student_model/" in m["error"] and "teacher.requests" not in m


@pytest.mark.slow
def test_gkd_full_samples_on_its_fraction_of_steps_and_scores_both_decodings(tmp_path, full_run):
    """wikisql_gkd_full as the docs show it (one lambda instead of the sweep): the on-policy steps are
    the seeded draw's, their cost is reported, and the student is scored constrained and plain, each
    paired with the teacher on the same rows. Its answers are sampled under the WikiSQL grammar
    (trainer.kd.sample_constrain), built from the real prompts."""
    from runner.train.on_policy import is_on_policy_step

    proc, run = run_cli(["+experiment=wikisql_gkd_full", f"pipeline.reuse_from=[{full_run}]", "dataset.n_train=80",
                         "trainer.kd.on_policy=0.5", "trainer.kd.sample_max_new_tokens=16",
                         "trainer.kd.sample_constrain=wikisql", "seed=3", *FULL], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_metrics(run)
    train_seed = (3 * 1_000_003 + zlib.crc32(b"train")) % (2**31 - 1)  # RunContext.stage_seed("train")
    want = [is_on_policy_step(0.5, train_seed, s) for s in range(6)]
    assert 0 < sum(want) < 6  # seed 3 mixes both kinds of step (else pick another seed)
    assert m["train.kd_on_policy"] == 0.5 and m["train.kd_on_policy_steps"] == sum(want)
    assert m["train.kd_sample_constrain"] == "wikisql"
    log = pl.read_parquet(run / "artifacts" / "train_log.parquet").filter(pl.col("loss").is_not_null())
    assert log["on_policy"].to_list() == want
    assert 0 < m["train.sample_s"] < m["train.train_s"] and 0 < m["train.sample_share"] < 1
    assert 16 * sum(want) <= m["train.kd_sampled_tokens"] <= 16 * 16 * sum(want)  # batch 16, <= 16 tokens each
    assert m["student_post.decoding"] == "greedy+wikisql" and m["student_post_plain.decoding"] == "greedy"
    for side in ("post_vs_teacher", "post_plain_vs_teacher"):
        assert m[f"compare.{side}.rows"] == m["student_post.rows"] > 0
    assert "train: on-policy" in (run / "run.log").read_text()
