"""Best-of-n with execution voting: `provider.n` teacher samples per question, one kept.

Each question is asked n times (Request.sample = 0..n-1: one request each, cached per
(prompt, sample index), so raising n later only pays for the new samples). Every sample is
cleaned and executed with the one cleaner and executor (evaluate.clean_frame / execute_frame).
The kept answer is the one whose execution result is the most common among the samples that
execute. Ties between equally common results: the highest judge score (the judge is asked only
about tied samples), then the shortest SQL. When no sample executes, the first sample without a
provider error is kept (agreement is then null: there is no result to agree on).

Per row (columns of teacher_raw):
  vote_n                samples asked
  vote_sample           index of the kept sample
  vote_agreement        samples whose result equals the winner's / n (null when none executes)
  vote_first_gold_match gold match of sample 0 (what n=1 would have kept)
  vote_gold_match       gold match of the kept sample
  vote_extra_cost_usd   cost of samples 1..n-1 (null when unknown); tokens_in/out, cost_usd and
                        attempts of the row are summed over all its samples

Results are compared on their first RESULT_ROWS_KEPT rows (execute_frame's pred_result), as
multisets of normalised values (the scorer's value keys).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from typing import Any

import polars as pl

from runner.distill.evaluate import (
    clean_frame,
    execute_frame,
    judge_frame,
    open_executor,
)
from runner.engine import Request, responses_frame
from runner.text2sql.scoring import _value_key

_SUMMED = ("tokens_in", "tokens_out", "cost_usd")
_RECORDS = ("generation", "latency_s", "tokens_in", "tokens_out", "cost_usd", "attempts", "cache_hit", "error",
            "error_kind", "gold_match")


def expand(requests: list[Request], n: int) -> list[Request]:
    """Row-major: request i, sample k sits at i * n + k."""
    if n <= 1:
        return requests
    return [replace(r, sample=k) for r in requests for k in range(n)]


def result_key(pred_result: str | None) -> str | None:
    """Order-insensitive, normalised key of an executed result (None when it did not execute)."""
    if pred_result is None:
        return None
    rows = sorted(repr(tuple(_value_key(v) for v in row)) for row in json.loads(pred_result))
    return "\n".join(rows)


def pick(keys: list[str | None], sql: list[str], scores: dict[int, float | None] | None = None
         ) -> tuple[int, float | None, list[int]]:
    """(winner index, agreement, indices tied for the most common result) for one question's samples.
    With `scores` (judge scores of the tied samples) the tie is broken; without, ties are returned."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k is not None:
            groups[k].append(i)
    if not groups:
        return -1, None, []
    top = max(len(g) for g in groups.values())
    tied = [g for g in groups.values() if len(g) == top]
    if len(tied) > 1 and scores is None:
        return -1, None, sorted(i for g in tied for i in g)

    def rank(g: list[int]) -> tuple:
        best = max((scores or {}).get(i) or -1.0 for i in g)
        return (-best, min(len(sql[i] or "") for i in g))

    winner = min(tied, key=rank)
    member = min(winner, key=lambda i: (-((scores or {}).get(i) or -1.0), len(sql[i] or ""), i))
    return member, top / len(keys), []


def _sum(values: list[Any]) -> Any:
    return None if any(v is None for v in values) else sum(values)


def voted_frame(ctx, prompts: pl.DataFrame, responses: list, n: int, judge) -> pl.DataFrame:
    """One row per prompt (same order): the voted sample's answer and the vote columns."""
    h = prompts.height
    records = responses_frame(responses).rename({"text": "generation"}).drop("id")
    samples = pl.concat([prompts[[i for i in range(h) for _ in range(n)]], records], how="horizontal")
    with open_executor(ctx) as ex:
        scored = execute_frame(clean_frame(samples), ex)
    keys = [result_key(r) for r in scored["pred_result"].to_list()]
    sqls = scored["clean_sql"].to_list()
    picks, ties = [], {}
    for q in range(h):
        sl = slice(q * n, (q + 1) * n)
        w, agree, tied = pick(keys[sl], sqls[sl])
        picks.append((w, agree))
        if tied:
            ties[q] = [q * n + i for i in tied]
    if ties:  # judge only what breaks a tie (an LLM judge costs a request per sample)
        rows = sorted(i for t in ties.values() for i in t)
        judged, _ = judge_frame(scored[rows], judge, ctx)
        score_of = dict(zip(rows, judged["judge_score"].to_list()))
        for q, members in ties.items():
            local = {i - q * n: score_of[i] for i in members}
            w, agree, _ = pick(keys[q * n:(q + 1) * n], sqls[q * n:(q + 1) * n], local)
            picks[q] = (w, agree)
    return _assemble(prompts, scored, picks, n)


def _assemble(prompts: pl.DataFrame, scored: pl.DataFrame, picks: list, n: int) -> pl.DataFrame:
    recs = scored.select(_RECORDS).to_dicts()
    out: dict[str, list] = defaultdict(list)
    for q, (w, agree) in enumerate(picks):
        mine = recs[q * n:(q + 1) * n]
        if w < 0:  # nothing executed: the first sample that has an answer
            w = next((i for i, r in enumerate(mine) if r["error"] is None), 0)
        win = mine[w]
        for k in ("generation", "latency_s", "cache_hit", "error", "error_kind"):
            out[k].append(win[k])
        answered = [r for r in mine if r["error"] is None] or [win]
        for k in _SUMMED:
            out[k].append(_sum([r[k] for r in answered]))
        out["attempts"].append(sum(r["attempts"] for r in mine))
        out["vote_n"].append(n)
        out["vote_sample"].append(w)
        out["vote_agreement"].append(agree)
        out["vote_first_gold_match"].append(bool(mine[0]["gold_match"]))
        out["vote_gold_match"].append(bool(win["gold_match"]))
        extra = [r for r in answered if r is not mine[0]]
        out["vote_extra_cost_usd"].append(_sum([r["cost_usd"] for r in extra]) if extra else 0.0)
    schema = {**{k: scored.schema[k] for k in _RECORDS}, "vote_n": pl.Int64, "vote_sample": pl.Int64,
              "vote_agreement": pl.Float64, "vote_first_gold_match": pl.Boolean, "vote_gold_match": pl.Boolean,
              "vote_extra_cost_usd": pl.Float64}
    order = [k for k in _RECORDS if k != "gold_match"] + [k for k in schema if k.startswith("vote_")]
    cols = [pl.Series(k, out.get(k, []), dtype=schema[k]) for k in order]
    return pl.concat([prompts, pl.DataFrame(cols)], how="horizontal")


def log_metrics(ctx, df: pl.DataFrame) -> None:
    """teacher.vote_* over the train split (teacher.* scope): agreement, gold match of the first
    sample vs of the vote, and what the extra samples cost."""
    if "vote_n" not in df.columns or df.height == 0:
        return
    train = df.filter(pl.col("split") == "train") if "split" in df.columns else df
    agree = train["vote_agreement"].drop_nulls()
    extra = df["vote_extra_cost_usd"].to_list()
    ctx.metrics.log("teacher.vote_n", int(df["vote_n"].max()))
    ctx.metrics.log("teacher.vote_agreement", float(agree.mean()) if agree.len() else None)
    ctx.metrics.log("teacher.vote_first_gold_match_rate",
                    float(train["vote_first_gold_match"].mean()) if train.height else None)
    ctx.metrics.log("teacher.vote_gold_match_rate", float(train["vote_gold_match"].mean()) if train.height else None)
    ctx.metrics.log("teacher.vote_changed_rate", float((train["vote_sample"] != 0).mean()) if train.height else None)
    ctx.metrics.log("teacher.vote_extra_cost_usd", _sum(extra))
