"""Wall-budget schedules and checkpoint selection on a dev split of train tables (never eval)."""
from __future__ import annotations

import polars as pl
import pytest

from runner.student.dev_select import DevSet
from runner.train.result import TrainPaths
from runner.train.schedule import Plan
from runner.train.trainer_torch import TorchTrainer
from tests.student.mini_run import make_run
from tests.train.toy import toy_database

FAST = {"batch_size": 16, "warmup_steps": 5, "progress": False, "num_threads": 1}


def test_plan_matches_the_named_schedules_and_refits_to_a_wall_budget():
    p = Plan(total_steps=110, warmup_steps=10, schedule="cosine")
    assert p.factor(0) == 0.0 and p.factor(5) == 0.5 and p.factor(10) == 1.0
    assert p.factor(60) == pytest.approx(0.5) and p.factor(110) == pytest.approx(0.0)
    assert Plan(110, 10, "linear").factor(60) == pytest.approx(0.5)
    assert Plan(110, 10, "cosine", min_ratio=0.1).factor(110) == pytest.approx(0.1)
    # 20 steps timed at 0.5 s, 15 s of 95 % of a 60 s budget spent: 84 more steps fit
    assert p.fit_wall(step=20, step_s=0.5, elapsed_s=15.0, budget_s=60.0) == 104
    q = Plan(1000, 10, "cosine")
    assert q.fit_wall(step=20, step_s=0.5, elapsed_s=15.0, budget_s=60.0) == 104
    assert q.factor(104) == pytest.approx(0.0) and 0 < q.factor(60) < 1  # the cosine now ends at 104
    assert Plan(50, 10).fit_wall(step=20, step_s=0.5, elapsed_s=15.0, budget_s=60.0) == 50  # never more
    # a later refit corrects a slow first estimate (steps now 0.25 s, 40 s of 57 left): up to the cap
    assert q.fit_wall(step=50, step_s=0.25, elapsed_s=30.0, budget_s=60.0) == 50 + 108
    assert Plan(120, 10).fit_wall(step=50, step_s=0.25, elapsed_s=30.0, budget_s=60.0) == 120  # the cap
    # validation every 10 steps taking 5 s adds 0.5 s per step: half as many steps fit (42, not 84)
    assert Plan(1000, 10).fit_wall(step=20, step_s=0.5, elapsed_s=15.0, budget_s=60.0,
                                   overhead_per_step_s=5.0 / 10) == 20 + 42


def test_wall_budget_stops_training_near_the_budget(toy_split, micro_base, tmp_path):
    trainer = TorchTrainer(method="full", epochs=1000, learning_rate=1e-2, max_wall_s=6.0, **FAST)
    result = trainer.fit(*toy_split, micro_base, _paths(tmp_path), seed=0)
    # the fit's own wall (model load and save included), with slack for a machine busy with other tests
    assert result.wall_s < 2 * 6.0, result.wall_s
    assert 20 < result.steps < 1000 * 8
    assert result.stopped_by == "wall_budget"  # the step count came from the clock: marked as such
    lrs = [r["lr"] for r in result.log if r["lr"] is not None]
    # the cosine was fitted to the budget: it ended near 0 (unfitted, it would still be near its peak,
    # epochs=1000 plan ~8000 steps). The stop comes from the clock, so on a loaded machine the last
    # steps run slower than the fitted ones and the stop lands a little before the cosine's end.
    assert lrs[-1] < 0.2 * max(lrs), (lrs[-1], max(lrs))


def _paths(root):
    return TrainPaths(model=root / "m", adapter=root / "a", checkpoints=root / "c", resume_dirs=[root / "c"])


def _toy_dev(tmp_path, rows):
    db = toy_database(tmp_path / "toy.sqlite")
    frame = pl.DataFrame({"sample_id": [f"d{i}" for i in range(len(rows))], "table_id": ["t"] * len(rows),
                          "system": [r["messages"][0]["content"] for r in rows],
                          "user": [r["messages"][1]["content"] for r in rows],
                          "gold_sql": [r["gold_sql"] for r in rows], "sql_table": [None] * len(rows)})
    return DevSet(frame, {"path": str(db), "timeout_s": 1.0, "max_rows": 1000}, max_new_tokens=24)


class ScriptedDev:
    """A dev set whose scores are scripted, recording a fingerprint of the weights it scored."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __len__(self):
        return 4

    def gold_rate(self, model, tokenizer):
        self.seen.append(float(sum(p.double().sum() for p in model.parameters())))
        return self.scores[len(self.seen) - 1]


def test_dev_gold_selects_and_saves_the_best_checkpoint(toy_split, micro_base, tmp_path):
    train, valid = toy_split
    dev = ScriptedDev([0.0, 0.5, 0.9, 0.3])  # steps 0, 50, 100, 150: the best is step 100
    trainer = TorchTrainer(method="full", max_steps=150, learning_rate=1e-2, eval_every=50,
                           checkpoint_select="dev_gold", **FAST)
    result = trainer.fit(train, valid, micro_base, _paths(tmp_path), seed=0, dev=dev)
    curve = [(r["step"], r["dev_gold"]) for r in result.log if r.get("dev_gold") is not None]
    assert curve == [(0, 0.0), (50, 0.5), (100, 0.9), (150, 0.3)]
    assert result.selected == "dev_gold" and result.best_step == 100 and result.dev_gold == 0.9
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert float(sum(p.double().sum() for p in saved.parameters())) == pytest.approx(dev.seen[2], rel=1e-9)
    assert dev.seen[2] != pytest.approx(dev.seen[3], rel=1e-9)  # not the last weights


def test_dev_gold_ties_go_to_the_lower_validation_loss(toy_split, micro_base, tmp_path):
    # Before the rise every dev score is 0: the earliest step must not win the tie.
    train, valid = toy_split
    dev = ScriptedDev([0.0, 0.0, 0.0, 0.0])
    trainer = TorchTrainer(method="full", max_steps=150, learning_rate=1e-2, eval_every=50,
                           checkpoint_select="dev_gold", **FAST)
    result = trainer.fit(train, valid, micro_base, _paths(tmp_path), seed=0, dev=dev)
    losses = {r["step"]: r["valid_loss"] for r in result.log if r.get("dev_gold") is not None and r["step"] > 0}
    lowest = min(losses, key=losses.get)
    assert lowest != 50, losses  # the case is informative: the old rule kept step 50
    assert result.best_step == lowest and result.dev_gold == 0.0


def test_dev_set_scores_greedy_answers_through_the_executor(toy_split, micro_base, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import runner.lm.generate as gen

    _, valid = toy_split
    dev = _toy_dev(tmp_path, valid[:8])
    golds = dev.rows["gold_sql"].to_list()
    # half the answers are the gold query (fenced, so the cleaner is on the path), half a wrong row
    answers = [f"```sql\n{g}\n```" if i % 2 == 0 else g.rsplit("=", 1)[0] + "= 'nobody'"
               for i, g in enumerate(golds)]
    monkeypatch.setattr(gen, "generate_torch", lambda model, tok, convs, **kw: [
        gen.Generation(text=a, tokens_in=0, tokens_out=0, latency_s=0.0, token_ids=[]) for a in answers])
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    model.train()
    assert dev.gold_rate(model, AutoTokenizer.from_pretrained(micro_base)) == 0.5
    assert model.training  # put back in training mode


def test_the_dev_split_never_reads_an_eval_row_or_table(tmp_path):
    ctx = make_run(tmp_path)
    distilled = ctx.store.read("distilled")
    # mini_run puts every row on one table; the dev rows get a train table of their own
    ok = distilled.with_columns(ft_split=pl.lit("valid"), sql_table=pl.lit(None, dtype=pl.String),
                                table_id=pl.lit("train_table"))
    ctx.store.write("distilled", ok)
    dev = DevSet.from_run(ctx, 100)
    eval_ids = set(ctx.store.read("prompts").filter(pl.col("split") == "eval")["sample_id"])
    assert len(dev) == ok.height and not set(dev.rows["sample_id"]) & eval_ids
    # a distilled row on an eval table (a broken split) is refused, not used for selection
    prompts = ctx.store.read("prompts")
    evil = ok.vstack(prompts.filter(pl.col("split") == "eval").head(1).with_columns(
        clean_sql=pl.col("gold_sql"), ft_split=pl.lit("valid"), sql_table=pl.lit(None, dtype=pl.String))
        .select(ok.columns))
    ctx.store.write("distilled", evil)
    with pytest.raises(RuntimeError, match="never read the held-out split"):
        DevSet.from_run(ctx, 100)


def test_with_max_steps_the_wall_budget_is_only_a_cap(toy_split, micro_base, tmp_path):
    """A step-defined recipe keeps its schedule; a cap that ends it early says so."""
    done = TorchTrainer(method="full", max_steps=8, learning_rate=1e-2, max_wall_s=600.0, **FAST)
    result = done.fit(*toy_split, micro_base, _paths(tmp_path / "a"), seed=0)
    assert result.steps == 8 and result.stopped_by == "steps"
    capped = TorchTrainer(method="full", max_steps=100000, learning_rate=1e-2, max_wall_s=2.0, **FAST)
    result = capped.fit(*toy_split, micro_base, _paths(tmp_path / "b"), seed=0)
    assert result.steps < 100000 and result.stopped_by == "wall_cap"
    lrs = [r["lr"] for r in result.log if r["lr"] is not None]
    assert lrs[-1] > 0.9 * max(lrs)  # the schedule was not refitted: far from its end when the cap hit
