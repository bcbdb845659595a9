"""Pipeline stages of the student side: `student_init` (build/load the base) and `train`.

student_init  reads train.jsonl                              writes student_base/
train         reads train.jsonl, valid.jsonl, student_base/  writes student_model/, train_log
                                                             (+ student_adapter/ for LoRA/DoRA)
"""
from __future__ import annotations

import os
from typing import Any

import polars as pl

from runner.core.artifacts import remove_path
from runner.core.stage import ConfigError, Stage
from runner.lm import constraint
from runner.train.chat_data import read_chat_jsonl
from runner.train.result import LOG_SCHEMA, TrainPaths, log_train_metrics


class StudentInit(Stage):
    """The untrained student as a Hugging Face folder: scratch (built here) or pretrained (linked/saved)."""

    reads = ("train.jsonl",)
    writes = ("student_base/",)

    def __init__(self, student: Any):
        self.student = student

    def validate(self, ctx) -> None:
        self.student.validate(self.name)

    def run(self, ctx) -> None:
        rows = read_chat_jsonl(ctx.store.locate("train.jsonl"))
        out = ctx.store.path("student_base/")
        tmp = out.with_name(out.name + ".tmp")
        remove_path(tmp)
        info = self.student.build(rows, tmp, ctx.stage_seed("student_init"))
        remove_path(out)
        os.replace(tmp, out)  # never leave a half-built model where the next stage would trust it
        ctx.timer.add_items(len(rows))
        ctx.metrics.log("student.source", self.student.description)
        for key in ("params", "vocab_size"):
            if info.get(key) is not None:
                ctx.metrics.log(f"student.{key}", info[key])
        ctx.log.info("student base %s (%s) -> %s", self.student.description,
                     ", ".join(f"{k}={v}" for k, v in info.items()), out)


class Train(Stage):
    """Fine-tune student_base on train.jsonl (validating on valid.jsonl) with the configured trainer."""

    reads = ("train.jsonl", "valid.jsonl", "student_base/")

    def __init__(self, trainer: Any, student: Any, constrain: str | None = None):
        # constrain: the eval stages' decoding, so dev selection scores answers as they will be decoded
        self.trainer, self.student, self.constrain = trainer, student, constrain
        adapter = ("student_adapter/",) if trainer.method in ("lora", "dora") else ()
        self.writes = ("student_model/", "train_log", *adapter)
        from runner.student.kd_stages import kd_reads

        self.reads = Train.reads + kd_reads(trainer)  # logit KD: the teacher and its stored logits
        if getattr(trainer, "checkpoint_select", "last") == "dev_gold":
            self.reads += ("distilled", "prompts", "database.json")  # the dev split and its scorer

    def validate(self, ctx) -> None:

        constraint.check_name(self.name, self.constrain)
        key = getattr(self.trainer, "config_key", "trainer")
        if getattr(self.student, "from_scratch", False) and self.trainer.method != "full":
            raise ConfigError(
                f"{key}.method={self.trainer.method} on student=scratch trains a low-rank update "
                f"of random weights, which cannot learn the task; use {key}.method=full for a scratch "
                "student (LoRA/DoRA are for pretrained students, e.g. student=hf)")
        if getattr(self.student, "from_scratch", False) and getattr(self.trainer, "num_layers", -1) != -1:
            raise ConfigError(f"{key}.num_layers={self.trainer.num_layers} leaves the embeddings and "
                              f"lower layers of a scratch student at their random init; use {key}.num_layers=-1")
        self.trainer.validate(self.name)
        from runner.student.kd_stages import validate_kd

        validate_kd(self.trainer, ctx.store, self.writes)

    def run(self, ctx) -> None:
        from runner.student.kd_stages import prepare_train

        prepare_train(self.trainer, ctx.store, self.writes)
        train_rows = read_chat_jsonl(ctx.store.locate("train.jsonl"))
        valid_rows = read_chat_jsonl(ctx.store.locate("valid.jsonl"))
        ckpt_dir = ctx.store.path("train_checkpoints/")
        paths = TrainPaths(model=ctx.store.path("student_model/"), adapter=ctx.store.path("student_adapter/"),
                           checkpoints=ckpt_dir,
                           resume_dirs=[ckpt_dir, *[d / ckpt_dir.name for d in ctx.store.fallback_dirs]])
        for p in (paths.model, paths.adapter):
            remove_path(p)
        dev = None
        if getattr(self.trainer, "checkpoint_select", "last") == "dev_gold":
            from runner.student.dev_select import DevSet

            dev = DevSet.from_run(ctx, self.trainer.dev_rows, constrain=self.constrain,  # refuses eval rows/tables
                                  max_new_tokens=self.trainer.dev_max_new_tokens)
        fit_kw = {"dev": dev} if dev is not None else {}
        result = self.trainer.fit(train_rows, valid_rows, ctx.store.locate("student_base/"), paths,
                                  ctx.stage_seed("train"), **fit_kw)
        ctx.store.write("train_log", pl.DataFrame(result.log, schema=LOG_SCHEMA))
        ctx.timer.add_items(len(train_rows))
        log_train_metrics(ctx.metrics, result, self.trainer)
        ctx.log.info("trained %d steps in %.1f s: final loss %s, best valid loss %s, %s tokens/s",
                     result.steps, result.wall_s, _fmt(result.final_loss), _fmt(result.best_valid_loss),
                     _fmt(result.tokens_per_s, ".0f"))


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "null" if v is None else format(v, spec)
