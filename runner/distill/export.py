"""Stage `export`: the teacher and distilled tables, the chat-format fine-tuning files and the
quality reports.

  teacher.parquet        every teacher row (both splits) with its scores, keep and reject_reason
  distilled.parquet      the kept train rows
  train.jsonl/valid.jsonl  {"messages": [system, user, assistant]} (mlx-lm and OpenAI
                         fine-tuning format); a row goes to train when
                         int(sha256("split:" + sample_id)[:8], 16) / 16**8 < train_ratio, so
                         the split is stable whatever else changes
  quality_teacher.json / quality_distilled.json

distilled.keep_rate = distilled.count / teacher.total, teacher.total being every teacher row of
the train split before filtering (rows the teacher failed on included).
"""
from __future__ import annotations

import hashlib
import json

import polars as pl

from runner.core.stage import ConfigError, Stage, check_choice
from runner.text2sql.quality import quality_report, rates, with_intervals

TARGETS = ("teacher", "gold")


def in_train(sample_id: str, train_ratio: float) -> bool:
    h = int(hashlib.sha256(f"split:{sample_id}".encode()).hexdigest()[:8], 16)
    return h / 16**8 < train_ratio


def chat_record(system: str, user: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                    {"role": "assistant", "content": answer}]}, ensure_ascii=False)


class ExportStage(Stage):
    reads = ("teacher_filtered",)
    writes = ("teacher", "distilled", "train.jsonl", "valid.jsonl", "quality_teacher.json",
              "quality_distilled.json")

    def __init__(self, train_ratio: float = 0.9, target: str = "teacher"):
        self.train_ratio, self.target = train_ratio, target

    def validate(self, ctx):
        if not isinstance(self.train_ratio, (int, float)) or not 0 < self.train_ratio < 1:
            raise ConfigError(f"{self.name}.train_ratio={self.train_ratio!r} must be in (0, 1)")
        check_choice(self.name, "target", self.target, TARGETS)

    def run(self, ctx):
        teacher = ctx.store.read("teacher_filtered")
        train_rows = teacher.filter(pl.col("split") == "train")
        distilled = train_rows.filter(pl.col("keep"))
        answer_col = "clean_sql" if self.target == "teacher" else "gold_sql"
        distilled = distilled.with_columns(
            target=pl.col(answer_col),
            ft_split=pl.Series([("train" if in_train(s, self.train_ratio) else "valid")
                                for s in distilled["sample_id"].to_list()], dtype=pl.String))
        ctx.store.write("teacher", teacher)
        ctx.store.write("distilled", distilled)
        for part in ("train", "valid"):
            rows = distilled.filter(pl.col("ft_split") == part).select("system", "user", "target").rows()
            text = "".join(chat_record(s, u, a) + "\n" for s, u, a in rows)
            ctx.store.write_text(f"{part}.jsonl", text)
            ctx.metrics.log(f"distilled.{part}_rows", len(rows))
        teacher_total = train_rows.height
        q_teacher = quality_report(train_rows, teacher_total=teacher_total)
        q_teacher["eval_split"] = rates(teacher.filter(pl.col("split") == "eval"))
        ctx.store.write_json("quality_teacher.json", q_teacher)
        q_dist = quality_report(distilled, teacher_total=teacher_total)
        q_dist["target"] = self.target
        ctx.store.write_json("quality_distilled.json", q_dist)
        ctx.timer.add_items(teacher.height)
        r = rates(distilled)
        ctx.metrics.update("distilled", {
            "count": distilled.height, "keep_rate": q_dist["keep_rate"],
            **with_intervals(r, ("exec_pass_rate", "gold_match_rate", "judge_mean")), "target": self.target})
        if distilled.height == 0:
            ctx.log.warning("export: no row was kept; train.jsonl is empty")
