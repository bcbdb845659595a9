"""The Text2SQL prompt: one template for teacher and student (the seeds' top optimisation is
fewer tokens, so the schema is one CREATE TABLE line plus the first k rows), and its token count.
The stage that renders it over a data set is runner.distill.prompt."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable

from runner.core.stage import ConfigError, check_range
from runner.engine.types import Request
from runner.text2sql.data import Table
from runner.text2sql.database import create_table_sql, table_schema

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


def build_request(row: dict[str, Any]) -> Request:
    """One chat request per prompt row. `meta` (gold structure) is read by the simulated teacher
    only; it is never sent to a real provider nor part of the cache key."""
    return Request(id=row["sample_id"], messages=chat_messages(row["system"], row["user"]), meta={
        "task": "text2sql", "table": row["query_table"], "columns": json.loads(row["columns"]),
        "types": json.loads(row["types"]), "sel": row["sel"], "agg": row["agg"],
        "conds": json.loads(row["conds"]), "gold_sql": row["gold_sql"]})
