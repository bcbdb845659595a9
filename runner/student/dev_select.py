"""Checkpoint selection without peeking: gold match on a dev split carved from the TRAIN tables.

Validation loss says how well the student imitates the teacher's tokens; what a user wants is the
checkpoint that answers best. The dev rows are the distilled set's `valid` rows (the export's hash
split of train-table questions), scored through the one executor against the dataset's gold SQL.
They never include an eval row or an eval table: `DevSet.from_run` refuses to build otherwise.
"""
from __future__ import annotations

import json
from typing import Any

import polars as pl

from runner.distill.evaluate import executor_from
from runner.text2sql.cleaner import clean_sql
from runner.text2sql.prompt import chat_messages
from runner.text2sql.scoring import score_sql


class DevSet:
    def __init__(self, rows: pl.DataFrame, db: dict[str, Any], batch_size: int = 32, max_new_tokens: int = 64,
                 constrain: str | None = None):
        self.rows, self.db = rows, db
        self.batch_size, self.max_new_tokens, self.constrain = batch_size, max_new_tokens, constrain

    @classmethod
    def from_run(cls, ctx, n_rows: int, **kw) -> "DevSet":
        distilled = ctx.store.read("distilled")
        dev = distilled.filter(pl.col("ft_split") == "valid").head(n_rows)
        prompts = ctx.store.read("prompts")
        eval_rows = prompts.filter(pl.col("split") == "eval")
        leak_ids = set(dev["sample_id"].to_list()) & set(eval_rows["sample_id"].to_list())
        leak_tables = set(dev["table_id"].to_list()) & set(eval_rows["table_id"].to_list())
        if leak_ids or leak_tables:
            raise RuntimeError(f"the dev split holds {len(leak_ids)} eval rows / {len(leak_tables)} eval tables: "
                               "checkpoint selection must never read the held-out split")
        db = json.loads(ctx.store.locate("database.json").read_text())
        return cls(dev.select("sample_id", "table_id", "system", "user", "gold_sql", "sql_table"), db, **kw)

    def __len__(self) -> int:
        return self.rows.height

    def gold_rate(self, model, tokenizer) -> float:
        """Greedy answers of `model` on the dev rows: share whose result matches the gold result."""
        import torch

        from runner.lm.generate import generate_torch

        convs = [chat_messages(s, u) for s, u in self.rows.select("system", "user").iter_rows()]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            gens = generate_torch(model, tokenizer, convs, max_new_tokens=self.max_new_tokens,
                                  batch_size=self.batch_size, workers=1, constrain=self.constrain)
        if was_training:
            model.train()
        hits = 0
        with executor_from(self.db) as ex:
            for g, (gold, table) in zip(gens, self.rows.select("gold_sql", "sql_table").iter_rows()):
                hits += score_sql(ex, clean_sql(g.text).sql, gold, table).gold_match
        return hits / len(gens) if gens else 0.0
