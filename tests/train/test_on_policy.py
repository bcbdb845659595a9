"""On-policy distillation (trainer.kd.on_policy): lambda = 0 is today's KD, the sampled batch's loss
covers exactly the sampled answer tokens, sampling is seeded, and the teacher scores exactly the
tokens the student sampled."""
from __future__ import annotations

import pytest
import torch

from runner.core.stage import ConfigError
from runner.train.chat_data import IGNORE, collate, encode_rows
from runner.train.kd_loss import kd_divergence_sum, teacher_targets
from runner.train.kd_runtime import KDRuntime
from runner.train.on_policy import is_on_policy_step, sample_answers
from runner.train.result import TrainPaths
from runner.train.trainer_torch import TorchTrainer


def _trainer(kd=None, **kw):
    return TorchTrainer(learning_rate=3e-3, batch_size=4, max_seq_length=256, num_threads=2, progress=False,
                        eval_every=None, warmup_steps=0, kd=kd, **kw)


def _paths(root):
    return TrainPaths(model=root / "m", adapter=root / "a", checkpoints=root / "c")


@pytest.fixture(scope="module")
def student(micro_base, toy_split):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_base)
    examples, _ = encode_rows(tok, toy_split[0][:6], 256)
    model = AutoModelForCausalLM.from_pretrained(micro_base, dtype=torch.float32)
    from runner.lm.generate import stop_token_ids

    return model, examples, tok.pad_token_id, stop_token_ids(tok, model)


def _sample(student, seed, temperature=1.5, max_new_tokens=12, workers=1):
    model, examples, pad, stops = student
    return sample_answers(model, examples, pad_id=pad, stop_ids=stops, max_new_tokens=max_new_tokens,
                          temperature=temperature, seed=seed, workers=workers)


def test_sampling_is_seeded_and_keeps_the_prompt(student):
    a, b, c = _sample(student, 3), _sample(student, 3), _sample(student, 4)
    assert [e.input_ids for e in a] == [e.input_ids for e in b]  # same seed, same tokens
    assert [e.input_ids for e in a] != [e.input_ids for e in c]  # another seed, other tokens
    # two decoding threads: the same tokens every time, whichever thread runs first
    threaded = [[e.input_ids for e in _sample(student, 3, workers=2)] for _ in range(3)]
    assert threaded[0] == threaded[1] == threaded[2]
    for sampled, data in zip(a, student[1]):
        assert sampled.input_ids[:sampled.prompt_len] == data.input_ids[:data.prompt_len]
        assert 1 <= sampled.n_target <= 12
    # the random untrained micro model does not write the data's answers
    assert sum(s.input_ids == d.input_ids for s, d in zip(a, student[1])) == 0


def test_the_on_policy_loss_covers_exactly_the_sampled_tokens(student, micro_teacher, micro_base):
    """The padded batch's on-policy loss equals the KD sum over each row's sampled tokens, computed
    one unpadded row at a time; the prompt and the padding carry no label; no CE term enters."""
    model, _, pad, _ = student
    sampled = _sample(student, 5)
    assert len({len(e.input_ids) for e in sampled}) > 1  # padding is present in the batch
    _, _, labels = collate(sampled, pad)
    for r, e in enumerate(sampled):
        assert (labels[r, :e.prompt_len] == IGNORE).all() and (labels[r, len(e.input_ids):] == IGNORE).all()
        assert labels[r, e.prompt_len:len(e.input_ids)].tolist() == e.input_ids[e.prompt_len:]
    tr = _trainer({"teacher": str(micro_teacher), "alpha": 0.3, "mode": "online", "top_k": None,
                   "temperature": 2.0, "on_policy": 1.0})
    tr.kd_teacher_dir = micro_teacher
    rt = KDRuntime.open(tr, micro_base, "cpu")
    with torch.no_grad():
        got, _ = tr._token_loss_sum(model, sampled, pad, "cpu", rt, on_policy=True)
        want = 0.0
        for e in sampled:
            ids = torch.tensor([e.input_ids])
            sl = model(input_ids=ids).logits[0, e.prompt_len - 1:-1]
            tl = rt.teacher(input_ids=ids).logits[0, e.prompt_len - 1:-1]
            want += kd_divergence_sum(sl, *teacher_targets(tl, 2.0, None), 2.0).item()
    assert got.item() == pytest.approx(want, rel=1e-5)  # alpha does not weigh it: KD alone
    assert rt.positions == sum(e.n_target for e in sampled)


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_lambda_zero_is_todays_kd(micro_teacher, micro_base, toy_split, tmp_path, mode):
    cfg = {"teacher": str(micro_teacher), "alpha": 0.5, "mode": mode, "top_k": 8, "store_dtype": "float32"}
    runs = []
    for i, extra in enumerate([{}, {"on_policy": 0.0}]):
        tr = _trainer({**cfg, **extra}, max_steps=4)
        tr.kd_teacher_dir = micro_teacher
        if mode == "offline":
            from transformers import AutoTokenizer

            from runner.train.teacher_logits import compute_store

            tok = AutoTokenizer.from_pretrained(micro_base)
            compute_store(encode_rows(tok, toy_split[0], 256)[0], micro_teacher, tr.kd, tmp_path / f"s{i}",
                          pad_id=tok.pad_token_id)
            tr.kd_logits_dir = tmp_path / f"s{i}"
        runs.append(tr.fit(toy_split[0], toy_split[1], micro_base, _paths(tmp_path / str(i)), seed=0))
    a, b = ([r["loss"] for r in res.log if r["loss"] is not None] for res in runs)
    assert len(a) == 4 and max(abs(x - y) for x, y in zip(a, b)) <= 1e-6
    assert "sample_s" not in runs[1].kd and all(r.get("on_policy") is None for r in runs[1].log)


def test_the_teacher_scores_exactly_what_the_student_sampled(micro_teacher, micro_base, toy_split, tmp_path,
                                                             monkeypatch):
    from runner.train import on_policy

    sampled_batches, teacher_inputs = [], []
    real = on_policy.OnPolicySampler.sample

    def record(self, *a, **kw):
        out = real(self, *a, **kw)
        sampled_batches.extend(out)
        return out

    monkeypatch.setattr(on_policy.OnPolicySampler, "sample", record)
    tr = _trainer({"teacher": str(micro_teacher), "alpha": 0.5, "mode": "online", "top_k": 8, "on_policy": 1.0,
                   "sample_max_new_tokens": 10}, max_steps=3)
    tr.kd_teacher_dir = micro_teacher
    real_open = KDRuntime.open

    def open_and_watch(trainer, base, device):
        rt = real_open(trainer, base, device)
        rt.teacher.register_forward_pre_hook(
            lambda mod, args, kwargs: teacher_inputs.append((kwargs["input_ids"].clone(),
                                                             kwargs["attention_mask"].clone())),
            with_kwargs=True)
        return rt

    monkeypatch.setattr(KDRuntime, "open", staticmethod(open_and_watch))
    res = tr.fit(toy_split[0], toy_split[1], micro_base, _paths(tmp_path), seed=0)
    assert len(sampled_batches) == len(teacher_inputs) == 3  # every step on-policy, one micro-batch each
    for exs, (ids, mask) in zip(sampled_batches, teacher_inputs):
        seen = [ids[r][mask[r].bool()].tolist() for r in range(ids.size(0))]
        assert seen == [e.input_ids for e in exs]
    assert res.kd["kd_on_policy_steps"] == 3 and res.kd["sample_s"] > 0 and res.kd["kd_sampled_tokens"] > 0
    assert res.kd["kd_positions"] == res.kd["kd_sampled_tokens"]  # the KD term ran over the sampled tokens only
    assert [r["on_policy"] for r in res.log if r["loss"] is not None] == [True] * 3


def test_constrained_sampling_writes_only_what_the_grammar_allows(student, micro_base):
    """kd.sample_constrain=wikisql: every sampled answer is a viable prefix of the prompt's query
    language, seeded, where the unconstrained micro model writes junk. (Its word-level toy tokenizer
    has no "(", so `SELECT AVG` is a dead end that ends the answer, as in constrained greedy.)"""
    from transformers import AutoTokenizer

    from runner.text2sql.grammar import from_prompt
    from runner.train.on_policy import OnPolicySampler

    model, examples, pad, stops = student
    sampler = OnPolicySampler(1.0, 1.5, 24, AutoTokenizer.from_pretrained(micro_base), model, "wikisql")
    sampler.check_rows(examples)
    a = sampler.sample(model, [examples], pad, seed=3, step=0)[0]
    assert [e.input_ids for e in a] == [e.input_ids for e in sampler.sample(model, [examples], pad, 3, 0)[0]]
    free = _sample(student, 3, max_new_tokens=24)
    viable = []
    for rows in (a, free):
        ok = 0
        for e in rows:
            answer = e.input_ids[e.prompt_len:]
            stopped = answer[-1] in stops
            text = b"".join(sampler.pieces[t] or b"" for t in (answer[:-1] if stopped else answer))
            ok += from_prompt(e.user).state(text)[0]
        viable.append(ok)
    assert viable == [len(a), viable[1]] and viable[1] < len(free)  # the constraint did the work
    assert sampler.stats(1.0)["kd_sample_constrain"] == "wikisql"


def test_constrained_sampling_refuses_prompts_without_a_schema_before_any_step(student, micro_base):
    from transformers import AutoTokenizer

    from runner.train.chat_data import Example
    from runner.train.on_policy import OnPolicySampler

    model = student[0]
    sampler = OnPolicySampler(0.5, 1.0, 8, AutoTokenizer.from_pretrained(micro_base), model, "wikisql")
    with pytest.raises(ValueError, match=r"row 1's prompt .*sample_constrain=null"):
        sampler.check_rows([student[1][0], Example([1, 2, 3], 2, "Translate this sentence.")])


def test_the_on_policy_fraction_is_a_seeded_draw_per_step():
    draws = [is_on_policy_step(0.5, 0, s) for s in range(2000)]
    assert 900 < sum(draws) < 1100
    assert draws == [is_on_policy_step(0.5, 0, s) for s in range(2000)]
    assert draws != [is_on_policy_step(0.5, 1, s) for s in range(2000)]
    assert not any(is_on_policy_step(0.0, 0, s) for s in range(100))
    assert all(is_on_policy_step(1.0, 0, s) for s in range(100))


def test_on_policy_settings_are_checked_before_any_step():
    for bad, word in [({"on_policy": 1.5}, "on_policy"), ({"on_policy": 0.5, "sample_temperature": 0},
                                                         "sample_temperature"),
                      ({"on_policy": 0.5, "sample_max_new_tokens": 0}, "sample_max_new_tokens"),
                      ({"on_policy": 0.5, "sample_constrain": "sql92"}, "sample_constrain")]:
        with pytest.raises(ConfigError, match=word):
            _trainer({"teacher": "/x", **bad}).validate("train")
    with pytest.raises(ConfigError, match="trainer.kd.enabled=false"):
        _trainer({"enabled": False, "on_policy": 0.5})


def test_train_cli_takes_the_same_keys(micro_teacher, toy_run_dir, tmp_path):
    import json

    from runner.train import cli as train_cli

    art = toy_run_dir / "artifacts"
    assert train_cli.main(["--train", str(art / "train.jsonl"), "--valid", str(art / "valid.jsonl"),
                           "--base", str(art / "student_base"), "--out", str(tmp_path), "--set", "max_steps=2",
                           "batch_size=4", "progress=false", "kd.enabled=true", f"kd.teacher={micro_teacher}",
                           "kd.mode=online", "kd.on_policy=1", "kd.sample_max_new_tokens=6"]) == 0
    kd = json.loads((tmp_path / "train_metrics.json").read_text())["kd"]
    assert kd["kd_on_policy_steps"] == 2 and 2 * 4 <= kd["kd_sampled_tokens"] <= 2 * 4 * 6
