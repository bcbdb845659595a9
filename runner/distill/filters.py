"""The `filters` group and the `filter` stage: decide which teacher train rows are distilled.

Cheap checks run first and the (optional) LLM yes/no filter only sees rows that survived them
(the seeds' "early cheap filters"). Each rejected row keeps the FIRST reason that rejected it:

  provider_error     the teacher request failed after retries
  empty              no SQL in the answer
  too_short/too_long len(text_field) outside [min_chars, max_chars]
  excluded_pattern   an exclude_regex matched
  low_keyword_score  weighted keyword score < min_keyword_score (seed 003's prefilter)
  exec_fail          require_exec and the SQL did not execute
  gold_mismatch      require_gold and the result differs from the gold result
  no_judge_score     min_score > 0 and the judge gave no score
  low_judge_score    judge_score < min_score
  duplicate          dedup and the same (prompt, SQL) pair was already kept
  llm_no / llm_unparseable / llm_error   the LLM filter said no / answered neither yes nor no / failed

Eval rows are never distilled: keep=false, reject_reason="eval_split" (not counted in filter.*).
"""
from __future__ import annotations

import re
from typing import Any

import polars as pl

from runner.core.stage import ConfigError, Stage, check_range
from runner.distill.gate import no_judge_score
from runner.engine.types import Request
from runner.text2sql.quality import counts

_TEXT_FIELDS = ("clean_sql", "generation", "question")


class LlmYesNo:
    """An LLM relevance/quality check: the answer must be exactly `yes` or `no` (case and one
    trailing period aside); anything else rejects the row as llm_unparseable."""

    def __init__(self, provider: Any = None, enabled: bool = False,
                 system: str = "Answer yes or no.", user: str = "{question}\n{sql}"):
        self.provider, self.enabled, self.system, self.user = provider, enabled, system, user

    def notices(self) -> list[str]:
        if not self.enabled or getattr(self.provider, "kind", None) != "simulated":
            return []
        return ["filters.llm runs on the SIMULATED provider: its yes/no answers derive from gold match, "
                "flipped with provider.yesno_error_rate: a calibration, not a measurement of an LLM filter"]

    def validate(self) -> None:
        if not self.enabled:
            return
        if self.provider is None:
            raise ConfigError("filters.llm.enabled=true needs filters.llm.provider")
        self.provider.validate()
        if "{sql}" not in self.user:
            raise ConfigError("filters.llm.user must contain {sql}")

    @staticmethod
    def parse(text: str | None) -> bool | None:
        t = (text or "").strip().lower()
        t = t[:-1] if t.endswith(".") else t
        return {"yes": True, "no": False}.get(t)

    def reasons(self, rows: list[dict], ctx) -> tuple[list[str | None], dict]:
        from runner.engine import generate

        reqs = [Request(id=f"yesno-{r['sample_id']}", messages=[
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(question=r["question"], sql=r["clean_sql"],
                                                         prompt=r["user"])}],
            meta={"task": "yesno", "answer": bool(r.get("gold_match"))}) for r in rows]
        result = generate(self.provider, reqs, cache_dir=ctx.cache_dir, desc="llm filter", log=ctx.log)
        out: list[str | None] = []
        for resp in result.responses:
            if resp.error is not None:
                out.append("llm_error")
            else:
                verdict = self.parse(resp.text)
                out.append(None if verdict else "llm_no" if verdict is False else "llm_unparseable")
        return out, result.stats


class Filters:
    def __init__(self, text_field: str = "clean_sql", min_chars: int = 0, max_chars: int = 0,
                 exclude_regex: list[str] | None = None, keywords: dict[str, float] | None = None,
                 min_keyword_score: float = 0.0, require_exec: bool = True, require_gold: bool = False,
                 min_score: float = 0.0, dedup: bool = True, llm: LlmYesNo | None = None, name: str = "custom"):
        self.text_field, self.min_chars, self.max_chars = text_field, min_chars, max_chars
        self.exclude_regex = list(exclude_regex or [])
        self.keywords = dict(keywords or {})
        self.min_keyword_score = min_keyword_score
        self.require_exec, self.require_gold = require_exec, require_gold
        self.min_score, self.dedup = min_score, dedup
        self.llm = llm or LlmYesNo()
        self.name = name  # what reports call this filter set (filters=oracle says it is an oracle)

    def validate(self) -> None:
        if self.text_field not in _TEXT_FIELDS:
            raise ConfigError(f"filters.text_field={self.text_field!r} is not one of {list(_TEXT_FIELDS)}")
        check_range("filters", "min_chars", self.min_chars, 0)
        check_range("filters", "max_chars", self.max_chars, 0)  # 0: no maximum
        if self.max_chars and self.min_chars > self.max_chars:
            raise ConfigError(f"filters.min_chars={self.min_chars} > filters.max_chars={self.max_chars}")
        check_range("filters", "min_score", self.min_score, 0, 1)
        check_range("filters", "min_keyword_score", self.min_keyword_score)
        for w in self.keywords.values():
            check_range("filters", "keywords.<weight>", w)
        for p in self.exclude_regex:
            try:
                re.compile(p)
            except re.error as e:
                raise ConfigError(f"filters.exclude_regex {p!r} is not a valid regex: {e}") from None
        self.llm.validate()

    def keyword_score(self, text: str) -> float:
        low = text.lower()
        return sum(w for k, w in self.keywords.items() if re.search(rf"\b{re.escape(k.lower())}\b", low))

    def _cheap_reason(self, r: dict, patterns: list[re.Pattern]) -> str | None:
        text = r.get(self.text_field) or ""
        if r.get("error") is not None:
            return "provider_error"
        if not (r.get("clean_sql") or "").strip():
            return "empty"
        if len(text) < self.min_chars:
            return "too_short"
        if self.max_chars and len(text) > self.max_chars:
            return "too_long"
        if any(p.search(text) for p in patterns):
            return "excluded_pattern"
        if self.keywords and self.keyword_score(text) < self.min_keyword_score:
            return "low_keyword_score"
        if self.require_exec and not r.get("exec_pass"):
            return "exec_fail"
        if self.require_gold and not r.get("gold_match"):
            return "gold_mismatch"
        if self.min_score > 0:
            if r.get("judge_score") is None:
                return "no_judge_score"
            if r["judge_score"] < self.min_score:
                return "low_judge_score"
        return None

    def apply(self, df: pl.DataFrame, ctx) -> tuple[list[str | None], dict]:
        """The reject reason of each row (None = keep) and the LLM filter's engine stats."""
        patterns = [re.compile(p, re.I) for p in self.exclude_regex]
        rows = df.to_dicts()
        reasons = [self._cheap_reason(r, patterns) for r in rows]
        if self.dedup:
            seen: set[tuple[str, str]] = set()
            for i, r in enumerate(rows):
                if reasons[i] is None:
                    key = (r["user"], r["clean_sql"])
                    reasons[i] = "duplicate" if key in seen else None
                    seen.add(key)
        stats: dict = {}
        if self.llm.enabled:
            alive = [i for i, reason in enumerate(reasons) if reason is None]
            verdicts, stats = self.llm.reasons([rows[i] for i in alive], ctx)
            for i, v in zip(alive, verdicts):
                reasons[i] = v
        return reasons, stats


class FilterStage(Stage):
    reads = ("teacher_judged",)
    writes = ("teacher_filtered",)

    def __init__(self, filters: Filters):
        self.filters = filters

    def notices(self) -> list[str]:
        oracle = ["filters=oracle keeps only the teacher rows whose result matches the gold answer: an "
                  "ORACLE that no real distillation run has (the gold answers are what the teacher is for); "
                  "it bounds what filtering could buy, it is not a filter to use"] if self.filters.require_gold else []
        return [*oracle, *self.filters.llm.notices()]

    def validate(self, ctx):
        self.filters.validate()
        # The judge stage records its kind when validated (it comes first); none -> no score to filter on.
        if ctx.extras.get("judge_kind") == "none" and self.filters.min_score > 0:
            raise ConfigError(no_judge_score("filters.min_score", self.filters.min_score, "gate.min_judge_mean"))

    def run(self, ctx):
        df = ctx.store.read("teacher_judged")
        is_train = (df["split"] == "train").to_list()
        train = df.filter(pl.col("split") == "train")
        train_reasons, stats = self.filters.apply(train, ctx)
        it = iter(train_reasons)
        reasons = [next(it) if t else "eval_split" for t in is_train]
        df = df.with_columns(reject_reason=pl.Series(reasons, dtype=pl.String)).with_columns(
            keep=pl.col("reject_reason").is_null())
        ctx.store.write("teacher_filtered", df)
        ctx.timer.add_items(train.height)
        kept = sum(r is None for r in train_reasons)
        ctx.metrics.update("filter", {"total": train.height, "kept": kept, "rejected": train.height - kept,
                                      "name": self.filters.name, "oracle": bool(self.filters.require_gold)})
        for reason, n in counts(pl.DataFrame({"r": train_reasons}, schema={"r": pl.String}), "r").items():
            ctx.metrics.log(f"filter.reject.{reason}", n)
        for k in ("requests", "cache_hits", "errors", "cost_usd"):
            if k in stats:
                ctx.metrics.log(f"filter.llm.{k}", stats[k])
        if self.filters.llm.enabled:
            ctx.metrics.log("filter.llm.simulated", bool(self.filters.llm.notices()))
