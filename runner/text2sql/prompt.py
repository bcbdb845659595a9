"""Stage `prompt`: one prompt template for teacher and student (the seeds' top optimisation is
fewer tokens, so the schema is one CREATE TABLE line plus the first k rows).

Writes `prompts`: sample_id, split, table_id, question, system, user, gold_sql, gold_result,
prompt_tokens and the gold query's structure (sql_table, columns, types, sel, agg, conds) that
the simulated teacher needs in `Request.meta`.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Callable

import polars as pl

from runner.stage import ConfigError, Stage, check_choice, check_range
from runner.text2sql.data import Table
from runner.text2sql.database import create_table_sql, table_schema
from runner.text2sql.load import tables_from_frame

TOKENIZER = "tiktoken cl100k_base"


def token_counter() -> tuple[Callable[[str], int] | None, str]:
    """(count function, tokenizer name). cl100k_base comes from the copy bundled with litellm
    (no network); if it cannot be loaded, (None, reason) and the mean is reported as null."""
    try:
        import tiktoken

        if "TIKTOKEN_CACHE_DIR" not in os.environ:
            spec = importlib.util.find_spec("litellm")  # locates the package without importing it
            if spec and spec.submodule_search_locations:
                bundled = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
                os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
        enc = tiktoken.get_encoding("cl100k_base")
        return (lambda s: len(enc.encode(s, disallowed_special=()))), TOKENIZER
    except Exception as e:  # noqa: BLE001 - token counts are a report, never a reason to fail the run
        return None, f"unavailable: {type(e).__name__}: {e}"


class PromptTemplate:
    """system + user text of a Text2SQL request. `{schema}`, `{rows}`, `{question}` in `user`."""

    def __init__(self, system: str = "Return only the SQL query.",
                 user: str = "{schema}\n{rows}\nQuestion: {question}", rows_k: int = 3,
                 max_cell_chars: int = 40, rows_header: str = "/* first {k} rows:\n{table}\n*/"):
        self.system, self.user, self.rows_k = system, user, rows_k
        self.max_cell_chars, self.rows_header = max_cell_chars, rows_header

    def validate(self, stage: str) -> None:
        check_range(stage, "rows_k", self.rows_k, 0)
        check_range(stage, "max_cell_chars", self.max_cell_chars, 1)
        for key in ("{schema}", "{question}"):
            if key not in self.user:
                raise ConfigError(f"{stage}.template.user must contain {key}; got {self.user!r}")
        if self.rows_k and "{rows}" not in self.user:
            raise ConfigError(f"{stage}.template.rows_k={self.rows_k} but template.user has no {{rows}}; "
                              "add it or set rows_k=0")

    def _cell(self, v: object) -> str:
        s = "" if v is None else str(v)
        return s if len(s) <= self.max_cell_chars else s[: self.max_cell_chars - 1] + "…"

    def rows_block(self, table: Table) -> str:
        rows = table.rows[: self.rows_k]
        if not rows:
            return ""
        cols = table_schema(table)[1]
        lines = [" | ".join(cols)] + [" | ".join(self._cell(v) for v in r) for r in rows]
        return self.rows_header.format(k=len(rows), table="\n".join(lines))

    def render(self, table: Table, question: str, name: str | None = None) -> tuple[str, str]:
        user = self.user.format(schema=create_table_sql(table, name), rows=self.rows_block(table),
                                question=question.strip())
        return self.system, user


def chat_messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class PromptStage(Stage):
    reads = ("samples", "tables")
    writes = ("prompts",)

    def __init__(self, template: dict | None = None, constrain: str | None = None):
        self.template = PromptTemplate(**(template or {}))
        self.constrain = constrain  # pipeline.constrain: the student's decoding must be able to read these prompts

    def validate(self, ctx):
        self.template.validate(f"{self.name}.template")
        if self.constrain:  # before any teacher request, not when the student is evaluated
            from runner.providers.local_hf import CONSTRAINTS
            from runner.student.constrain import prompt_parts

            check_choice("pipeline", "constrain", self.constrain, CONSTRAINTS)

            probe = Table(id="probe", header=["name"], types=["text"], rows=[["x"]])
            try:
                prompt_parts(self.template.render(probe, "Which name?", "t")[1])
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
