"""Stage `prompt`: renders runner.text2sql.prompt's template over every sample.

Writes `prompts`: sample_id, split, table_id, question, system, user, gold_sql, gold_result,
prompt_tokens and the gold query's structure (sql_table, columns, types, sel, agg, conds) that
the simulated teacher needs in `Request.meta`.
"""
from __future__ import annotations

import json

import polars as pl

from runner.core.stage import ConfigError, Stage
from runner.distill.load import tables_from_frame
from runner.lm import constraint
from runner.text2sql.data import Table
from runner.text2sql.database import table_schema
from runner.text2sql.prompt import PromptTemplate, token_counter


class PromptStage(Stage):
    reads = ("samples", "tables")
    writes = ("prompts",)

    def __init__(self, template: dict | None = None, constrain: str | None = None):
        self.template = PromptTemplate(**(template or {}))
        self.constrain = constrain  # pipeline.constrain: the student's decoding must be able to read these prompts

    def validate(self, ctx):
        self.template.validate(f"{self.name}.template")
        if self.constrain:  # before any teacher request, not when the student is evaluated
            constraint.check_name("pipeline", self.constrain)
            probe = Table(id="probe", header=["name"], types=["text"], rows=[["x"]])
            try:
                constraint.check_prompt(self.constrain, self.template.render(probe, "Which name?", "t")[1])
            except ValueError as e:
                raise ConfigError(f"pipeline.constrain={self.constrain} cannot read this prompt ({e}); keep "
                                  f"'Question: {{question}}' in {self.name}.template.user or set "
                                  "pipeline.constrain=null") from e

    def run(self, ctx):
        samples = ctx.store.read("samples")
        tables = tables_from_frame(ctx.store.read("tables"))
        systems, users, cols, types = [], [], [], []
        for tid, q, name in samples.select("table_id", "question", "query_table").iter_rows():
            s, u = self.template.render(tables[tid], q, name)
            systems.append(s)
            users.append(u)
            _, c, t = table_schema(tables[tid])
            cols.append(json.dumps(c, ensure_ascii=False))
            types.append(json.dumps(t))
        count, tokenizer = token_counter()
        tokens = [count(s) + count(u) for s, u in zip(systems, users)] if count else [None] * len(users)
        out = samples.with_columns(
            system=pl.Series(systems, dtype=pl.String), user=pl.Series(users, dtype=pl.String),
            columns=pl.Series(cols, dtype=pl.String), types=pl.Series(types, dtype=pl.String),
            prompt_tokens=pl.Series(tokens, dtype=pl.Int64))
        ctx.store.write("prompts", out)
        ctx.timer.add_items(out.height)
        # Message text only (system + user); chat-template framing tokens are not counted.
        ctx.metrics.log("prompt.mean_tokens", out["prompt_tokens"].mean() if count else None)
        ctx.metrics.log("prompt.max_tokens", out["prompt_tokens"].max() if count else None)
        ctx.metrics.log("prompt.mean_chars", float(out["user"].str.len_chars().mean() + len(systems[0]))
                        if out.height else None)
        ctx.metrics.log("prompt.tokenizer", tokenizer)
