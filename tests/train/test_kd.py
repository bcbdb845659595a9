"""Logit distillation (trainer.torch.kd): the loss against hand computation, top-k = dense at k = |V|,
alpha = 0 is SFT bit for bit, assistant-only masking, offline = online, and the fail-early checks."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from runner.core.artifacts import ArtifactStore
from runner.core.stage import ConfigError
from runner.lm.scratch import ScratchStudent
from runner.student.kd_stages import validate_kd
from runner.train.chat_data import encode_rows
from runner.train.kd_loss import kd_divergence_sum, teacher_targets
from runner.train.kd_runtime import KDRuntime
from runner.train.teacher_logits import (
    OfflineTargets,
    compute_store,
    tokenizer_difference,
)
from runner.train.trainer_torch import TorchTrainer
from tests.conftest import MICRO


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def test_forward_kl_equals_hand_computation_on_two_tokens():
    t = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    s = [[0.0, 1.0, 0.0], [1.0, 1.0, -2.0]]
    tau = 2.0
    want = 0.0
    for zt, zs in zip(t, s):
        pt, ps = _softmax([v / tau for v in zt]), _softmax([v / tau for v in zs])
        want += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    want *= tau ** 2
    ids, logp = teacher_targets(torch.tensor(t), tau, None)
    got = kd_divergence_sum(torch.tensor(s), ids, logp, tau, "forward_kl")
    assert got.item() == pytest.approx(want, rel=1e-6)
    # reverse KL by hand too
    rev = tau ** 2 * sum(sum(b * (math.log(b) - math.log(a)) for a, b in zip(
        _softmax([v / tau for v in zt]), _softmax([v / tau for v in zs]))) for zt, zs in zip(t, s))
    assert kd_divergence_sum(torch.tensor(s), ids, logp, tau, "reverse_kl").item() == pytest.approx(rev, rel=1e-6)


@pytest.mark.parametrize("rest", ["bucket", "renormalise"])
@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd"])
def test_top_k_with_k_equal_vocab_is_dense(loss, rest):
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(7, 50, generator=g) * 3, torch.randn(7, 50, generator=g) * 3
    dense = kd_divergence_sum(s, *teacher_targets(t, 1.5, None), 1.5, loss, 0.3)
    topk = kd_divergence_sum(s, *teacher_targets(t, 1.5, 50), 1.5, loss, 0.3, rest)
    assert topk.item() == pytest.approx(dense.item(), rel=1e-5, abs=1e-6)
    smaller = kd_divergence_sum(s, *teacher_targets(t, 1.5, 5), 1.5, loss, 0.3, rest)
    assert smaller.item() != pytest.approx(dense.item(), rel=1e-3)  # truncation does change it


def test_top_k_bucket_by_hand_and_it_sees_student_mass_outside_the_top_k():
    """k = 2 of 4 tokens: the rest bucket holds 1 - p(top 2) on each side. A student that agrees with
    the teacher inside S but puts extra mass outside it costs nothing when renormalised, and a
    positive amount with the bucket."""
    t = torch.tensor([[3.0, 2.0, 0.0, 0.0]])
    ids, logp = teacher_targets(t, 1.0, 2)
    pt = _softmax(t[0].tolist())
    s = torch.tensor([[3.0, 2.0, 2.5, 2.5]])  # same ratio p0/p1 as the teacher, more mass on 2 and 3
    ps = _softmax(s[0].tolist())
    a = [pt[0], pt[1], 1 - pt[0] - pt[1]]
    b = [ps[0], ps[1], 1 - ps[0] - ps[1]]
    want = sum(x * math.log(x / y) for x, y in zip(a, b))
    assert kd_divergence_sum(s, ids, logp, 1.0, rest="bucket").item() == pytest.approx(want, rel=1e-5)
    assert kd_divergence_sum(s, ids, logp, 1.0, rest="renormalise").item() == pytest.approx(0.0, abs=1e-6)
    assert want > 0.1


def test_jsd_ends_approach_forward_and_reverse_kl():
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(4, 20, generator=g), torch.randn(4, 20, generator=g)
    ids, logp = teacher_targets(t, 1.0, None)
    fwd = kd_divergence_sum(s, ids, logp, 1.0, "forward_kl").item()
    rev = kd_divergence_sum(s, ids, logp, 1.0, "reverse_kl").item()
    eps = 1e-4
    assert kd_divergence_sum(s, ids, logp, 1.0, "jsd", eps).item() / eps == pytest.approx(fwd, rel=1e-2)
    assert kd_divergence_sum(s, ids, logp, 1.0, "jsd", 1 - eps).item() / eps == pytest.approx(rev, rel=1e-2)


def _trainer(kd=None, **kw):
    return TorchTrainer(learning_rate=3e-3, batch_size=8, max_seq_length=256, num_threads=2, progress=False,
                        eval_every=None, warmup_steps=0, kd=kd, **kw)


@pytest.fixture(scope="module")
def batch(micro_base, toy_split):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_base)
    examples, _ = encode_rows(tok, toy_split[0][:6], 256)
    model = AutoModelForCausalLM.from_pretrained(micro_base, dtype=torch.float32)
    return model, examples, tok.pad_token_id


def _runtime(trainer, teacher, base):
    trainer.kd_teacher_dir = teacher
    return KDRuntime.open(trainer, base, "cpu")


def test_alpha_zero_reproduces_the_sft_loss_exactly(batch, micro_teacher, micro_base):
    model, examples, pad = batch
    sft = _trainer()
    kd_tr = _trainer({"teacher": str(micro_teacher), "alpha": 0.0, "mode": "online"})
    rt = _runtime(kd_tr, micro_teacher, micro_base)
    assert rt.teacher is None  # alpha = 0 never runs the teacher
    a, _ = sft._token_loss_sum(model, examples, pad, "cpu")
    b, _ = kd_tr._token_loss_sum(model, examples, pad, "cpu", rt)
    assert a.item() == b.item()


def test_kd_term_covers_assistant_tokens_only(batch, micro_teacher, micro_base):
    """The padded batch's KD sum equals the per-row sum over positions prompt_len-1 .. n-2 (the
    logits that predict the answer tokens), computed one unpadded row at a time."""
    model, examples, pad = batch
    tr = _trainer({"teacher": str(micro_teacher), "alpha": 1.0, "mode": "online", "top_k": None,
                   "temperature": 2.0})
    rt = _runtime(tr, micro_teacher, micro_base)
    with torch.no_grad():
        got, _ = tr._token_loss_sum(model, examples, pad, "cpu", rt)
        want = 0.0
        for e in examples:
            ids = torch.tensor([e.input_ids])
            sl = model(input_ids=ids).logits[0, e.prompt_len - 1:-1]
            tl = rt.teacher(input_ids=ids).logits[0, e.prompt_len - 1:-1]
            want += kd_divergence_sum(sl, *teacher_targets(tl, 2.0, None), 2.0).item()
    assert rt.positions == sum(e.n_target for e in examples)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("loss", ["forward_kl", "jsd"])
def test_offline_equals_online_on_the_same_batch(batch, micro_teacher, micro_base, tmp_path, loss):
    model, examples, pad = batch
    cfg = {"teacher": str(micro_teacher), "alpha": 0.7, "top_k": 8, "temperature": 1.5, "loss": loss,
           "store_dtype": "float32"}
    online = _trainer({**cfg, "mode": "online"})
    offline = _trainer({**cfg, "mode": "offline"})
    meta = compute_store(examples, micro_teacher, offline.kd, tmp_path / "store", pad_id=pad, batch_size=4)
    assert meta["positions"] == sum(e.n_target for e in examples)
    assert meta["bytes_per_token"] == 8 * (2 + 4)  # int16 ids + float32 log-probs
    offline.kd_logits_dir = tmp_path / "store"
    with torch.no_grad():
        a, _ = online._token_loss_sum(model, examples, pad, "cpu", _runtime(online, micro_teacher, micro_base))
        b, _ = offline._token_loss_sum(model, examples, pad, "cpu", _runtime(offline, micro_teacher, micro_base))
    assert abs(a.item() - b.item()) <= 1e-5 * max(1.0, abs(a.item()))
    # The default float16 store (2 bytes per log-prob): the loss within 1e-3 relative of online.
    half = _trainer({**cfg, "mode": "offline", "store_dtype": "float16"})
    compute_store(examples, micro_teacher, half.kd, tmp_path / "half", pad_id=pad)
    ids, logp = OfflineTargets(tmp_path / "half", half.kd).targets(examples, "cpu")
    assert logp.shape == (meta["positions"], 8) and ids.dtype == torch.int64
    half.kd_logits_dir = tmp_path / "half"
    with torch.no_grad():
        c, _ = half._token_loss_sum(model, examples, pad, "cpu", _runtime(half, micro_teacher, micro_base))
    assert c.item() == pytest.approx(a.item(), rel=1e-3)


def test_kd_training_lowers_the_kd_term_and_reports_costs(micro_teacher, micro_base, toy_split, tmp_path):
    from runner.train.result import TrainPaths

    tr = _trainer({"teacher": str(micro_teacher), "alpha": 0.9, "mode": "online", "top_k": 16}, max_steps=6)
    tr.kd_teacher_dir = micro_teacher
    res = tr.fit(toy_split[0], toy_split[1], micro_base,
                 TrainPaths(model=tmp_path / "m", adapter=tmp_path / "a", checkpoints=tmp_path / "c"), seed=0)
    assert res.kd["kd_teacher_s"] > 0 and res.kd["kd_positions"] > 0 and res.kd["kd_mode"] == "online"
    losses = [r["loss"] for r in res.log if r["loss"] is not None]
    assert losses[-1] < losses[0]


def test_config_checks_fail_in_seconds():
    for bad, word in [({"alpha": 1.5}, "alpha"), ({"top_k": 0}, "top_k"), ({"temperature": 0}, "temperature"),
                      ({"loss": "tvd"}, "loss"), ({"loss": "jsd", "beta": 1.0}, "beta"),
                      ({"mode": "offline", "top_k": None}, "top_k"), ({"teacher": None}, "teacher")]:
        cfg = {"teacher": "/x", **bad}
        with pytest.raises(ConfigError, match=word):
            _trainer(cfg).validate("train")
    assert _trainer({"enabled": False}).kd is None  # off: nothing checked, nothing changes
    with pytest.raises(ConfigError, match="trainer.kd.enabled=false"):  # a kd key set while off: refused
        _trainer({"enabled": False, "alpha": 9})


def test_mlx_with_kd_is_a_config_error():
    from runner.train.trainer_mlx import MlxTrainer

    with pytest.raises(ConfigError, match="trainer=torch only"):
        MlxTrainer(method="full", kd={"enabled": True, "teacher": "/x"}).validate("train")
    with pytest.raises(ConfigError, match="trainer=torch only"):  # an experiment's trainer.torch.kd under trainer=mlx
        MlxTrainer(method="full", torch={"kd": {"enabled": True}}).validate("train")


def test_tokenizer_mismatch_fails_at_validation_naming_the_difference(micro_base, micro_teacher, toy_split, tmp_path):
    other = tmp_path / "other"  # its own BPE, trained on different text with a smaller vocabulary
    ScratchStudent("micro", {"micro": {**MICRO, "vocab_size": 320}}, max_position_embeddings=256).build(
        toy_split[1], other, seed=0)
    assert "vocabulary size differs" in tokenizer_difference(other, micro_base)
    assert tokenizer_difference(micro_teacher, micro_base) is None
    store = ArtifactStore(tmp_path / "run" / "artifacts")
    (store.root / "student_base").symlink_to(micro_base, target_is_directory=True)
    tr = _trainer({"teacher": str(other), "mode": "online"})
    with pytest.raises(ConfigError, match="tokenizers differ: vocabulary size differs"):
        validate_kd(tr, store)
    validate_kd(_trainer({"teacher": str(micro_teacher), "mode": "online"}), store)  # same tokenizer: fine


def test_pipeline_order_must_name_every_stage():
    from omegaconf import OmegaConf

    from runner.pipeline import _ordered

    stages = OmegaConf.create({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
    assert [n for n, _ in _ordered(["c", "a", "b"], stages)] == ["c", "a", "b"]
    assert [n for n, _ in _ordered(None, stages)] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"missing \['b'\]"):
        _ordered(["c", "a"], stages)
    with pytest.raises(ConfigError, match=r"unknown \['z'\]"):
        _ordered(["c", "a", "b", "z"], stages)


def _questions(path: Path, train_tables: list[str], eval_tables: list[str]) -> None:
    import polars as pl

    path.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"table_id": train_tables + eval_tables,
                  "split": ["train"] * len(train_tables) + ["eval"] * len(eval_tables)}
                 ).write_parquet(path / "questions.parquet")


def test_a_teacher_from_a_run_that_trained_on_our_eval_tables_is_refused(tmp_path):
    from runner.student.kd_stages import check_teacher_tables, locate_input

    teacher_run, ours = tmp_path / "teacher" / "artifacts", tmp_path / "ours" / "artifacts"
    (teacher_run / "student_model").mkdir(parents=True)
    _questions(teacher_run, ["t1", "t2", "t3"], ["e1"])
    store = ArtifactStore(ours, [teacher_run])
    # the stage writes its own student_model/: the teacher is looked up in the reused run only
    (ours / "student_model").mkdir(parents=True)
    assert locate_input(store, "student_model/", ("student_model/",)) == teacher_run / "student_model"
    assert locate_input(store, "student_model/") == ours / "student_model"
    _questions(ours, ["t1"], ["e1", "e2"])  # same held-out tables: fine
    check_teacher_tables(teacher_run / "student_model", store)
    _questions(ours, ["t1"], ["t2", "e2"])  # our eval table t2 was one of the teacher's train tables
    with pytest.raises(ConfigError, match=r"trained on 1 tables of this run's held-out eval split \(e.g. \['t2'\]\)"):
        check_teacher_tables(teacher_run / "student_model", store)


def test_a_teacher_whose_tables_cannot_be_checked_fails_closed(tmp_path):
    """A plain HF folder (no questions.parquet beside it) used to pass silently and then be logged
    as "trained on none of this run's eval tables"."""
    from runner.student.kd_stages import check_teacher_tables

    plain, ours = tmp_path / "plain" / "teacher_hf", tmp_path / "ours" / "artifacts"
    plain.mkdir(parents=True)
    _questions(ours, ["t1"], ["e1"])
    store = ArtifactStore(ours, [])
    with pytest.raises(ConfigError, match=r"cannot check .*questions.parquet is missing.*teacher_tables_check=false"):
        check_teacher_tables(plain, store)
    assert check_teacher_tables(plain, store, required=False) is False  # the user accepted the risk


def test_kd_keys_set_while_kd_is_disabled_are_a_config_error():
    from runner.train.kd_loss import KDConfig

    assert KDConfig.from_config({"enabled": False, "teacher": None, "alpha": 0.5}) is None  # the shipped default
    with pytest.raises(ConfigError, match=r"trainer.kd.alpha is set but trainer.kd.enabled=false.*kd.alpha, kd.teacher"):
        KDConfig.from_config({"enabled": False, "teacher": "/some/folder", "alpha": 0.3})
