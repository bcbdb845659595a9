"""`provider.mode=batch`: the teacher's requests through the provider's batch API.

Flow (litellm's create_file / create_batch / retrieve_batch / file_content, OpenAI-compatible
endpoints): cache lookup as online -> the misses as one JSONL file (custom_id = cache key) ->
create the batch -> poll every provider.batch_poll_s -> download the output (and error) file ->
every answer goes into the same response cache. Items that failed or are missing (batch failed,
expired) are resubmitted online through the engine, with its retries.

Resume: the batch id is recorded in <cache_dir>/batches.sqlite, keyed by the hash of the request
set, the moment the batch is created. A rerun (e.g. after SIGKILL while polling) whose missing
requests are all in a recorded, unfinished batch polls THAT batch: it is never submitted twice.
(A kill between the provider creating the batch and the record being written, a few ms, cannot
be recovered and would submit again.)

Cost: usage tokens x the batch price (runner.providers.pricing: the map's batch price, else half
the online price; the basis is logged as teacher.batch_cost_basis). Latency: a batch item has no
per-request latency (null); the batch's wall time is logged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from runner.core.stage import ConfigError
from runner.engine import generate
from runner.engine.backend import open_cache, server_url
from runner.engine.cache import ResponseCache, request_key
from runner.engine.records import run_stats
from runner.engine.types import Completion, GenerationResult, Request, Response
from runner.providers.pricing import price, unit_prices

_TERMINAL = {"completed", "failed", "expired", "cancelled"}


def generate_any(provider: Any, requests: list[Request], *, cache_dir: Path | str, desc: str = "teacher",
                 progress: bool = True, log: logging.Logger | None = None, metrics=None) -> GenerationResult:
    """engine.generate, or the batch path when provider.mode == "batch". stats gain cpu_s: process CPU
    seconds of the generation, client import and warm-up excluded (the forecast's per-attempt client
    cost), so provider.setup() runs first here when anything will be sent (idempotent in generate)."""
    online = getattr(provider, "mode", "online") != "batch"
    if online and _will_send(provider, requests, cache_dir):
        provider.setup()
    cpu0 = time.process_time()
    if not online:
        result = BatchClient(provider, cache_dir, log or logging.getLogger("runner.batch"), metrics).run(
            requests, desc)
    else:
        result = generate(provider, requests, cache_dir=cache_dir, desc=desc, progress=progress, log=log)
    result.stats["cpu_s"] = time.process_time() - cpu0
    return result


def _will_send(provider: Any, requests: list[Request], cache_dir: Path | str) -> bool:
    if not requests or getattr(provider, "batched", False):
        return False
    if not provider.cache:
        return True
    identity = provider.cache_identity()
    keys = {request_key(identity, r.messages, r.sample) for r in requests}
    cache = open_cache(cache_dir)
    try:
        return len(cache.get_many(keys)) < len(keys)
    finally:
        cache.close()


def check_batch(provider: Any) -> None:
    """Config checks for mode=batch (no network)."""
    if not provider.cache:
        raise ConfigError("provider.mode=batch needs provider.cache=true: answers and the batch id are kept in "
                          "the cache dir so a killed run resumes its batch instead of submitting another")
    route = provider.model.split("/")[0]
    if route != "openai" and not getattr(provider, "api_base", None):
        raise ConfigError(f"provider.mode=batch speaks the OpenAI files + batches API; {provider.model!r} is not "
                          "an openai/ model and provider.api_base is unset. Fix: an openai/ model or an "
                          "OpenAI-compatible api_base, or provider.mode=online")


class BatchState:
    """<cache_dir>/batches.sqlite: one row per submitted batch (request-set hash -> batch id)."""

    @staticmethod
    def open(cache_dir: Path | str):
        """The registry beside the response cache: on its server when cache.backend=postgres."""
        if server_url():
            from runner.engine.cache_pg import PgBatchState

            return PgBatchState(server_url())
        return BatchState(cache_dir)

    def __init__(self, cache_dir: Path | str):
        self.db = sqlite3.connect(Path(cache_dir) / "batches.sqlite", timeout=60, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS batches (set_hash TEXT PRIMARY KEY, batch_id TEXT NOT NULL, "
                        "file_id TEXT, keys TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL)")

    def find(self, set_hash: str, keys: set[str]) -> str | None:
        """An unfinished batch holding every key (the same set, or a superset left by a killed run)."""
        rows = self.db.execute("SELECT set_hash, batch_id, keys FROM batches WHERE status = 'submitted' "
                               "ORDER BY set_hash = ? DESC, created_at DESC", (set_hash,)).fetchall()
        for _, batch_id, stored in rows:
            if keys <= set(json.loads(stored)):
                return batch_id
        return None

    def record(self, set_hash: str, batch_id: str, file_id: str, keys: list[str]) -> None:
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, 'submitted', ?)",
                        (set_hash, batch_id, file_id, json.dumps(keys), time.time()))

    def finish(self, batch_id: str, status: str) -> None:
        self.db.execute("UPDATE batches SET status = ? WHERE batch_id = ?", (f"done:{status}", batch_id))

    def close(self) -> None:
        self.db.close()


class BatchClient:
    def __init__(self, provider: Any, cache_dir: Path | str, log: logging.Logger, metrics=None):
        self.provider, self.cache_dir, self.log, self.metrics = provider, Path(cache_dir), log, metrics

    def _kw(self) -> dict[str, Any]:
        call = self.provider.call_kwargs()
        kw = {"custom_llm_provider": "openai", "timeout": self.provider.timeout_s}
        for k in ("api_base", "api_key"):
            if call.get(k):
                kw[k] = call[k]
        return kw

    def _line(self, key: str, req: Request) -> str:
        from runner.providers.litellm_client import sample_params

        body = {"model": self.provider.model.split("/", 1)[-1], "messages": req.messages,
                **sample_params(self.provider.generation_params(), req.sample)}
        return json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body})

    def run(self, requests: list[Request], desc: str) -> GenerationResult:
        check_batch(self.provider)
        t0 = time.monotonic()
        identity = self.provider.cache_identity()
        keys = [request_key(identity, r.messages, r.sample) for r in requests]
        cache = open_cache(self.cache_dir)
        try:
            hits = cache.get_many(keys)
            todo: dict[str, Request] = {}
            for k, r in zip(keys, requests):
                if k not in hits:
                    todo.setdefault(k, r)
            got, failed, info = self._batch(todo, cache) if todo else ({}, {}, {})
        finally:
            cache.close()
        # Failed or missing items: online, with the engine's retries (answers land in the same cache).
        online = generate(self.provider, [todo[k] for k in failed], cache_dir=self.cache_dir,
                          desc=f"{desc} (batch retries online)", progress=False, log=self.log) if failed else None
        retried = dict(zip(failed, online.responses)) if online else {}
        responses, first = [], set()
        for k, r in zip(keys, requests):
            if k in hits:
                c, lat = hits[k]
                responses.append(_resp(r, c, lat, 0, True))
            elif k in got and k not in first:
                first.add(k)
                responses.append(_resp(r, got[k], None, 1, False))
            elif k in got:  # identical prompt in this call: answered by the same item
                responses.append(_resp(r, got[k], None, 0, True))
            else:
                responses.append(_copy(retried[k], r.id, first_row=k not in first))
                first.add(k)
        rows_of: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in todo:
                rows_of.setdefault(k, []).append(i)
        stats = run_stats(responses, sum(k in hits for k in keys), [SimpleNamespace(rows=v) for v in rows_of.values()],
                          len(todo) + (online.stats["attempts"] if online else 0), time.monotonic() - t0)
        stats.update(setup_s=0.0, **{f"batch_{k}": v for k, v in info.items()})
        self.log.info("%s (batch): asked %d, %d cache hits, %d in batch %s, %d retried online, %d errors, %.1f s",
                      desc, len(requests), stats["cache_hits"], len(todo), info.get("id"), len(failed),
                      stats["errors"], stats["wall_s"])
        if self.metrics is not None and info:
            for k in ("id", "resumed", "items", "failed_items", "status", "cost_basis", "wall_s"):
                self.metrics.log(f"teacher.batch_{k}", info.get(k))
        return GenerationResult(responses=responses, stats=stats)

    def _batch(self, todo: dict[str, Request], cache: ResponseCache):
        from runner.providers.litellm_client import load_litellm

        litellm, kw = load_litellm(), self._kw()
        t0 = time.monotonic()
        set_hash = hashlib.sha256(json.dumps(sorted(todo)).encode()).hexdigest()
        state = BatchState.open(self.cache_dir)
        try:
            batch_id = state.find(set_hash, set(todo))
            resumed = batch_id is not None
            if resumed:
                self.log.info("resuming batch %s (recorded in %s/batches.sqlite): not submitting again",
                              batch_id, self.cache_dir)
            else:
                data = "".join(self._line(k, r) + "\n" for k, r in todo.items()).encode()
                f = litellm.create_file(file=("requests.jsonl", data), purpose="batch", **kw)
                b = litellm.create_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                         input_file_id=f.id, metadata={"runner_request_set": set_hash[:16]}, **kw)
                batch_id = b.id
                state.record(set_hash, batch_id, f.id, sorted(todo))  # at once: a rerun resumes this batch
                self.log.info("submitted batch %s: %d requests", batch_id, len(todo))
            b = self._poll(litellm, kw, batch_id)
            got, errors = self._download(litellm, kw, b, todo, cache)
            state.finish(batch_id, b.status)
        finally:
            state.close()
        failed = [k for k in todo if k not in got]
        _, _, basis = unit_prices(self.provider)
        info = {"id": batch_id, "resumed": resumed, "items": len(todo), "failed_items": len(failed),
                "status": b.status, "cost_basis": basis, "wall_s": time.monotonic() - t0,
                "errors_sample": next(iter(errors.values()), None)}
        return got, failed, info

    def _poll(self, litellm, kw, batch_id: str):
        last = None
        while True:
            b = litellm.retrieve_batch(batch_id=batch_id, **kw)
            counts = getattr(b, "request_counts", None)
            line = (b.status, getattr(counts, "completed", None), getattr(counts, "failed", None))
            if line != last:
                self.log.info("batch %s: %s (completed %s, failed %s)", batch_id, *line)
                last = line
            if b.status in _TERMINAL:
                return b
            time.sleep(float(self.provider.batch_poll_s))

    def _download(self, litellm, kw, b, todo: dict[str, Request], cache: ResponseCache):
        p_in, p_out, _ = unit_prices(self.provider)
        got: dict[str, Completion] = {}
        errors: dict[str, str] = {}
        for fid in (getattr(b, "output_file_id", None), getattr(b, "error_file_id", None)):
            if not fid:
                continue
            for raw in litellm.file_content(file_id=fid, **kw).content.decode().splitlines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                key, resp = item.get("custom_id"), item.get("response") or {}
                if key not in todo:
                    continue
                c = _completion(resp, p_in, p_out)
                if isinstance(c, str):
                    errors[key] = c if not item.get("error") else f"{c}: {item['error']}"
                    continue
                got[key] = c
                cache.put(key, c, None, self.provider.model)
        return got, errors


def _completion(resp: dict, p_in, p_out) -> Completion | str:
    """One output line -> Completion, or the reason it is unusable."""
    if resp.get("status_code") != 200:
        return f"batch item status {resp.get('status_code')}: {json.dumps(resp.get('body'))[:300]}"
    body = resp.get("body") or {}
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return "batch item without choices[0].message"
    if text is None:
        return "batch item with null message content"
    usage = body.get("usage") or {}
    t_in, t_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Completion(text=text, tokens_in=t_in, tokens_out=t_out, cost_usd=price(t_in, t_out, p_in, p_out))


def _resp(req: Request, c: Completion, latency, attempts: int, cache_hit: bool) -> Response:
    return Response(id=req.id, text=c.text, tokens_in=c.tokens_in, tokens_out=c.tokens_out, cost_usd=c.cost_usd,
                    latency_s=latency, attempts=attempts, cache_hit=cache_hit)


def _copy(r: Response, rid: str, first_row: bool) -> Response:
    return Response(id=rid, text=r.text, tokens_in=r.tokens_in, tokens_out=r.tokens_out, cost_usd=r.cost_usd,
                    latency_s=r.latency_s, attempts=r.attempts if first_row else 0,
                    cache_hit=r.cache_hit or not first_row, error=r.error, error_kind=r.error_kind)
