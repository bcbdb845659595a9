"""The `judge` group: a score in [0, 1] per answered row (or None with a reason).

  rule  1.0 gold match, 0.5 executes, 0.0 otherwise: the seeds' fixed function of exec pass
        and gold match, kept (and named as such) only for comparability with their numbers.
  llm   an LLM-as-judge through the generation engine (any provider, cached like teacher
        calls): a rubric prompt, strict JSON {"score": x} with 0 <= x <= 1; anything else is
        None with the reason recorded.
  none  no judge: every score is None (judge means are reported as null).

Every judge takes a frame with `clean_sql`, `exec_pass`, `gold_match` (and for `llm`:
`sample_id`, `user`, `pred_result`, `gold_sql`) and is used for teacher and student rows alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from runner.core.stage import ConfigError
from runner.engine.types import Request


@dataclass
class JudgeResult:
    scores: list[float | None]
    reasons: list[str | None]
    stats: dict[str, Any] = field(default_factory=dict)  # engine stats for LLM judges


def rule_scores(df: pl.DataFrame) -> list[float]:
    gm = df["gold_match"].fill_null(False).to_list()
    ep = df["exec_pass"].fill_null(False).to_list()
    return [1.0 if g else 0.5 if e else 0.0 for g, e in zip(gm, ep)]


class Judge:
    kind = "base"

    def validate(self) -> None:
        """Cheap config checks."""

    def notices(self) -> list[str]:
        return []

    def judge(self, df: pl.DataFrame, ctx) -> JudgeResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, df: pl.DataFrame, ctx) -> list[float | None]:
        return self.judge(df, ctx).scores


class RuleJudge(Judge):
    kind = "rule"

    def judge(self, df, ctx):
        return JudgeResult(rule_scores(df), [None] * df.height)


class NoJudge(Judge):
    kind = "none"

    def judge(self, df, ctx):
        return JudgeResult([None] * df.height, ["no_judge"] * df.height)


def parse_score(text: str | None) -> tuple[float | None, str | None]:
    """Strict: the whole answer is a JSON object with a numeric `score` in [0, 1]."""
    if text is None:
        return None, "no_response"
    try:
        obj = json.loads(text.strip())
    except ValueError:
        return None, "not_json"
    if not isinstance(obj, dict) or "score" not in obj:
        return None, "no_score_key"
    s = obj["score"]
    if isinstance(s, bool) or not isinstance(s, (int, float)):
        return None, "score_not_a_number"
    if not 0.0 <= float(s) <= 1.0:
        return None, "score_out_of_range"
    return float(s), None


class LlmJudge(Judge):
    kind = "llm"

    def __init__(self, provider: Any, system: str, user: str, max_result_chars: int = 300,
                 with_reference: bool = True):
        self.provider = provider
        self.system, self.user = system, user
        self.max_result_chars, self.with_reference = max_result_chars, with_reference

    def notices(self) -> list[str]:
        if getattr(self.provider, "kind", None) != "simulated":
            return []
        return ["judge=llm runs on the SIMULATED provider: its scores derive from gold match plus noise "
                "(provider.judge_noise), a calibration, not a measurement of an LLM judge"]

    def validate(self) -> None:
        self.provider.validate()
        for key in ("{question}", "{sql}", "{result}"):
            if key not in self.user:
                raise ConfigError(f"judge.user must contain {key} (the judge needs to see it)")
        if self.with_reference and "{gold_sql}" not in self.user:
            raise ConfigError("judge.with_reference=true but judge.user has no {gold_sql}; add it or set "
                              "judge.with_reference=false")

    def _request(self, row: dict) -> Request:
        result = row.get("pred_result") or "null"
        if len(result) > self.max_result_chars:
            result = result[: self.max_result_chars] + "…"
        # The full prompt (schema, rows, question) when the frame has it, else the bare question.
        question = row.get("user") or row.get("question") or ""
        user = self.user.format(question=question, sql=row["clean_sql"], result=result,
                                gold_sql=row["gold_sql"] if self.with_reference else "")
        # The simulated provider answers from `correct`; meta never reaches a real provider.
        correct = 1.0 if row.get("gold_match") else 0.5 if row.get("exec_pass") else 0.0
        return Request(id=f"judge-{row['sample_id']}", messages=[
            {"role": "system", "content": self.system}, {"role": "user", "content": user}],
            meta={"task": "judge", "correct": correct})

    def judge(self, df, ctx):
        from runner.engine import generate

        rows = df.to_dicts()
        scores: list[float | None] = [None] * len(rows)
        reasons: list[str | None] = [None] * len(rows)
        asked = []
        for i, row in enumerate(rows):
            if not (row.get("clean_sql") or "").strip():
                scores[i], reasons[i] = 0.0, "empty_sql"  # nothing to judge; no request spent
            else:
                asked.append(i)
        result = generate(self.provider, [self._request(rows[i]) for i in asked], cache_dir=ctx.cache_dir,
                          desc="judge", log=ctx.log)
        for i, resp in zip(asked, result.responses):
            if resp.error is not None:
                scores[i], reasons[i] = None, f"error:{resp.error_kind or 'other'}"
            else:
                scores[i], reasons[i] = parse_score(resp.text)
        return JudgeResult(scores, reasons, result.stats)
