"""Stages `student_pre` / `student_post`: the student answers the held-out eval split.

Same prompt rows (artifacts/prompts, split == "eval"), same cleaner, sandboxed executor, scorer
and judge as the teacher (runner.distill.evaluate), through the generation engine with the
`local_hf` provider (true batched greedy decoding; mlx-lm's batch generation for mlx students).
Rows are sent longest-first so each engine batch holds similar lengths (little padding).

Never evaluated on training data: the run fails if an eval sample id is among the distilled
rows, or an eval prompt appears in train.jsonl / valid.jsonl.

Writes `<output>.parquet` (prompt columns + generation, engine records, clean_sql, exec_pass,
exec_error, gold_match, judge_score) and `<output>_perf.json` (load time, throughput, memory;
read by `compare`). Metrics `<output>.*`: exec_pass_rate, gold_match_rate, judge_mean, rows,
rows_per_s (= rows generated / generation wall, after a warm-up batch, model load excluded),
generated_tokens_per_s (= sum of tokens actually generated / the same wall), load_s, ...
"""
from __future__ import annotations

import json
import time
from typing import Any

import polars as pl

from runner.core.stage import ConfigError, Stage, check_choice, check_range
from runner.distill.evaluate import (
    clean_frame,
    execute_frame,
    judge_frame,
    open_executor,
)
from runner.distill.teacher import answers_frame
from runner.engine import Request, generate
from runner.lm import constraint
from runner.lm.perf import PeakMemory, rss_bytes
from runner.providers.local_hf import LocalHFProvider
from runner.text2sql.prompt import chat_messages
from runner.text2sql.quality import rates, with_intervals


def training_prompts(ctx) -> tuple[set[str], set[tuple[str, str]]]:
    """Sample ids of the distilled rows and (system, user) of every train/valid JSONL row."""
    ids = set(ctx.store.read("distilled")["sample_id"].to_list()) if ctx.store.exists("distilled") else set()
    prompts: set[tuple[str, str]] = set()
    for name in ("train.jsonl", "valid.jsonl"):
        path = ctx.store.locate(name)
        if path is None:
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                msgs = json.loads(line)["messages"]
                system = next((m["content"] for m in msgs if m["role"] == "system"), "")
                user = next(m["content"] for m in msgs if m["role"] == "user")
                prompts.add((system, user))
    return ids, prompts


def check_held_out(ctx, eval_rows: pl.DataFrame) -> None:
    """Raise if any eval row was used for training (by sample id or by identical prompt)."""
    train_ids, train_prompts = training_prompts(ctx)
    leaked_ids = sorted(set(eval_rows["sample_id"].to_list()) & train_ids)
    leaked_prompts = [sid for sid, s, u in eval_rows.select("sample_id", "system", "user").rows()
                      if (s, u) in train_prompts]
    if leaked_ids or leaked_prompts:
        raise RuntimeError(
            f"eval rows overlap the training data ({len(leaked_ids)} sample ids among the distilled rows, "
            f"{len(leaked_prompts)} prompts in train/valid.jsonl; e.g. {(leaked_ids or leaked_prompts)[:3]}); "
            "the student must be judged on held-out rows only")


class StudentEvalStage(Stage):
    """Generate, clean, execute and judge the student's answers on the eval split (see module doc)."""

    def __init__(self, model_dir: str, output: str, judge: Any, trainer: Any = None, backend: str = "auto",
                 batch_size: int = 32, max_new_tokens: int = 64, device: str = "auto", dtype: str = "auto",
                 warmup_rows: int = 8, latency_probe_rows: int = 0, cache: bool = False, progress: bool = True,
                 share_prefix_min_tokens: int = 0, workers: int | str = "auto", constrain: str | None = None):
        self.model_dir, self.output, self.judge, self.trainer = model_dir, output, judge, trainer
        self.backend, self.batch_size, self.max_new_tokens = backend, batch_size, max_new_tokens
        self.device, self.dtype, self.warmup_rows = device, dtype, warmup_rows
        self.latency_probe_rows, self.cache, self.progress = latency_probe_rows, cache, progress
        self.share_prefix_min_tokens, self.workers, self.constrain = share_prefix_min_tokens, workers, constrain
        self.reads = ("prompts", "database.json", "train.jsonl", "valid.jsonl", "distilled", model_dir)
        self.writes = (output, f"{output}_perf.json")

    def resolved_backend(self) -> str:
        """auto: the trainer's backend (mlx students are evaluated with mlx-lm), else torch."""
        if self.backend != "auto":
            return self.backend
        return "mlx" if getattr(self.trainer, "backend", None) == "mlx" else "torch"

    def validate(self, ctx) -> None:
        check_choice(self.name, "backend", self.backend, ("auto", "torch", "mlx"))
        check_range(self.name, "batch_size", self.batch_size, 1)
        check_range(self.name, "max_new_tokens", self.max_new_tokens, 1)
        check_range(self.name, "warmup_rows", self.warmup_rows, 0)
        check_range(self.name, "latency_probe_rows", self.latency_probe_rows, 0)
        check_range(self.name, "share_prefix_min_tokens", self.share_prefix_min_tokens, 0)
        constraint.check_name(self.name, self.constrain)
        if self.constrain and self.resolved_backend() == "mlx":
            raise ConfigError(f"{self.name}.constrain={self.constrain}: constrained decoding runs on the torch "
                              "backend only; set pipeline.constrain=null for an mlx student")
        if self.workers != "auto":
            check_range(self.name, "workers", self.workers, 1)
        if not self.model_dir.endswith("/"):
            raise ConfigError(f"{self.name}.model_dir={self.model_dir!r} must name a folder artifact "
                              "ending in '/', e.g. student_model/")
        self.judge.validate()

    def _provider(self, ctx) -> LocalHFProvider:
        path = ctx.store.locate(self.model_dir)
        if path is None:
            raise FileNotFoundError(f"artifact {self.model_dir!r} not found under {ctx.store.root}")
        provider = LocalHFProvider(str(path), backend=self.resolved_backend(), device=self.device, dtype=self.dtype,
                                   batch_size=self.batch_size, max_tokens=self.max_new_tokens, cache=self.cache,
                                   share_prefix_min_tokens=self.share_prefix_min_tokens,
                                   concurrency=self._workers(), constrain=self.constrain)
        provider.validate()
        return provider

    def run(self, ctx) -> None:
        eval_rows = ctx.store.read("prompts").filter(pl.col("split") == "eval")
        if eval_rows.height == 0:
            raise RuntimeError("no eval rows in artifacts/prompts (split == 'eval'); set dataset.n_eval > 0")
        check_held_out(ctx, eval_rows)
        provider = self._provider(ctx)
        with PeakMemory(self._device_hint()) as mem:
            rss_before = mem.start_rss_bytes  # the baseline the peak is measured from (>= it)
            provider.setup()
            rss_loaded = rss_bytes()
            # The engine fills batches in request order: longest first (similar lengths share a
            # batch) with the questions on one table together (their schema prefix is shared).
            convs = [chat_messages(s, u) for s, u in eval_rows.select("system", "user").rows()]
            sequence = provider.order(convs)
            convs = [convs[i] for i in sequence]
            ordered = eval_rows[sequence]
            if self.warmup_rows:  # first-call costs (allocator, kernel selection) kept out of the timing
                provider.generate(convs[:self.warmup_rows], batch_size=self.warmup_rows)
            requests = [Request(id=sid, messages=c) for sid, c in zip(ordered["sample_id"].to_list(), convs)]
            result = generate(provider, requests, cache_dir=ctx.cache_dir, desc=self.output,
                              progress=self.progress, log=ctx.log)
        answered = answers_frame(ordered, result.responses)
        probe = self._latency_probe(provider, convs)
        with open_executor(ctx) as ex:
            scored = execute_frame(clean_frame(answered), ex)
        scored, judge_stats = judge_frame(scored, self.judge, ctx)
        for k in ("requests", "cache_hits", "errors", "cost_usd"):  # an LLM judge's own engine calls
            if k in judge_stats:
                ctx.metrics.log(f"{self.output}.judge_{k}", judge_stats[k])
        original = eval_rows.select("sample_id").with_row_index("_order")
        scored = scored.join(original, on="sample_id").sort("_order").drop("_order")
        ctx.store.write(self.output, scored)
        perf = self._perf(provider, result.stats, scored, mem, rss_before, rss_loaded, probe)
        ctx.store.write_json(f"{self.output}_perf.json", perf)
        self._log(ctx, scored, perf)
        ctx.timer.add_items(scored.height)

    def _workers(self) -> int:
        """auto: one batch per CPU thread for torch on a CPU (runner.lm.greedy says why), else 1."""
        if self.workers != "auto":
            return int(self.workers)
        if self.resolved_backend() != "torch":
            return 1
        from runner.lm.greedy import auto_workers

        return auto_workers(self._device_hint())

    def _device_hint(self) -> str:
        if self.resolved_backend() == "mlx":
            return "cpu"
        from runner.lm.generate import resolve_device

        return resolve_device(self.device)

    @staticmethod
    def _device_of(provider: LocalHFProvider) -> str:
        model, _ = provider.model_and_tokenizer
        return str(getattr(model, "device", "mlx" if provider.backend == "mlx" else "cpu"))

    def _latency_probe(self, provider: LocalHFProvider, convs: list) -> dict[str, Any] | None:
        """Per-request latency one at a time (batch 1) on the first N rows: what a single caller waits."""
        n = min(self.latency_probe_rows, len(convs))
        if n == 0:
            return None
        lat = []
        for conv in convs[:n]:
            t0 = time.perf_counter()
            provider.generate([conv], batch_size=1)
            lat.append(time.perf_counter() - t0)
        s = pl.Series(lat)
        return {"rows": n, "p50_s": float(s.quantile(0.5, "linear")), "p95_s": float(s.quantile(0.95, "linear")),
                "rows_per_s": n / sum(lat)}

    def _perf(self, provider, stats, df, mem, rss_before, rss_loaded, probe) -> dict[str, Any]:
        fresh = df.filter(~pl.col("cache_hit") & pl.col("error").is_null())
        gen_wall = stats.get("wall_s")
        tokens = int(fresh["tokens_out"].sum()) if fresh.height else 0
        measured = fresh.height > 0 and gen_wall
        lat = fresh["latency_s"].drop_nulls()
        model, _ = provider.model_and_tokenizer
        params = (sum(p.numel() for p in model.parameters()) if provider.backend == "torch" else None)
        return {
            "model_dir": provider.model, "backend": provider.backend, "device": self._device_of(provider),
            "batch_size": provider.batch_size, "max_new_tokens": provider.max_tokens, "rows": df.height,
            "decoding": _decoding(provider.constrain),
            "rows_generated": fresh.height, "cache_hits": stats.get("cache_hits"), "errors": stats.get("errors"),
            "load_s": provider.load_s, "generation_wall_s": gen_wall,
            "rows_per_s": fresh.height / gen_wall if measured else None,
            "generated_tokens": tokens,
            "generated_tokens_per_s": tokens / gen_wall if measured else None,
            "mean_generated_tokens": tokens / fresh.height if fresh.height else None,
            # Rows that used the whole budget without a stop token: their SQL may be cut off.
            "truncated_rate": (float((fresh["tokens_out"] >= provider.max_tokens).mean()) if fresh.height else None),
            # A batched row's answer arrives when its batch returns: latency = that batch's wall time.
            "batch_latency_p50_s": float(lat.quantile(0.5, "linear")) if lat.len() else None,
            "batch_latency_p95_s": float(lat.quantile(0.95, "linear")) if lat.len() else None,
            "single_row_latency": probe,
            "params_total": params, **mem.as_dict(),
            "rss_model_load_bytes": (rss_loaded - rss_before) if rss_before and rss_loaded else None,
            # The process may hold memory from earlier stages (e.g. training); growth isolates the student.
            "rss_at_start_bytes": rss_before,
            "peak_rss_growth_bytes": (mem.peak_rss_bytes - rss_before
                                      if mem.peak_rss_bytes and rss_before and mem.scope == "window" else None),
            "null_reasons": {
                **({} if measured else {"rows_per_s": "every row came from the response cache or failed: "
                                                      "nothing was generated to time"}),
                **({} if probe else {"single_row_latency": f"{self.name}.latency_probe_rows=0"}),
                **({} if mem.scope == "window" else {"peak_rss_growth_bytes": "the RSS high-water mark could "
                                                     "not be reset here; peak_rss_bytes covers the whole process"}),
                **({} if params is not None else {"params_total": "mlx backend: counted by compare from "
                                                                  "safetensors headers"}),
            },
        }

    def _log(self, ctx, df: pl.DataFrame, perf: dict[str, Any]) -> None:
        r = rates(df)
        ctx.metrics.update(self.output, {
            **with_intervals(r, ("exec_pass_rate", "gold_match_rate", "judge_mean")),
            "empty_rate": r.get("empty_rate"), "rows": df.height,
            "rows_per_s": perf["rows_per_s"], "generated_tokens_per_s": perf["generated_tokens_per_s"],
            "load_s": perf["load_s"], "generation_wall_s": perf["generation_wall_s"],
            "peak_rss_bytes": perf["peak_rss_bytes"], "peak_rss_growth_bytes": perf["peak_rss_growth_bytes"],
            "backend": perf["backend"], "decoding": perf["decoding"],
            "batch_size": perf["batch_size"], "errors": perf["errors"], "truncated_rate": perf["truncated_rate"]})
        if "schema_seen" in df.columns and df["schema_seen"].is_not_null().any() and df["schema_seen"].any():
            # disjoint=table: held-out tables may share a schema with a train table; score both kinds
            for name, part in (("seen_schema", df.filter(pl.col("schema_seen"))),
                               ("unseen_schema", df.filter(~pl.col("schema_seen")))):
                for k, v in with_intervals(rates(part), ("gold_match_rate", "exec_pass_rate")).items():
                    ctx.metrics.log(f"{self.output}.{k.replace('_rate', f'_rate_{name}', 1)}", v)
                ctx.metrics.log(f"{self.output}.rows_{name}", part.height)
        ctx.log.info("%s (%s decoding): %d eval rows, exec pass %.3f, gold match %.3f, %s rows/s", self.output,
                     perf["decoding"], df.height, r["exec_pass_rate"] or 0.0, r["gold_match_rate"] or 0.0,
                     "null" if perf["rows_per_s"] is None else f"{perf['rows_per_s']:.1f}")


def _decoding(constrain: str | None) -> str:
    """How the answers were decoded: `greedy`, or `greedy+wikisql` (runner.text2sql.grammar)."""
    return f"greedy+{constrain}" if constrain else "greedy"
