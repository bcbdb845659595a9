"""Pilot forecast and budget gate: what the rest of the teacher run will cost before it is paid for.

After the pilot (stage `teacher`), from what the pilot measured:
  requests   distinct requests still to send: the remaining rows x provider.n, minus cache hits
  tokens_in  sum over those requests of prompt characters x (pilot tokens_in / pilot prompt characters)
  tokens_out requests x mean pilot tokens_out
  cost       tokens_in x input price + tokens_out x output price (litellm's price map; batch mode:
             its batch price, else half the online price); null with `cost_reason` when unknown
  wall_s     median makespan of a simulated sliding window (runner.distill.forecast_sim) over
             latencies drawn from the pilot's (a lognormal fitted to its median and IQR), with
             provider.concurrency, rpm/tpm pacing and the
             pilot's per-attempt failure rate (backoff as the engine does it); never below
             attempts x the pilot's client CPU seconds per attempt (one event loop)
  kept       expected kept train rows = keep rate of the pilot's train rows under the cheap filters
             (filters.*, without the LLM filter) x planned train rows, with a 95 % Wilson interval
Full-run figures (`total_*`) add what the pilot already spent. Budget limits (gate.max_cost_usd,
gate.max_wall_s: on the full run; gate.min_expected_kept: on the point estimate) stop the run
with status `gated` before any non-pilot request. At the end of the stage, forecast vs actual of
the remaining part: forecast.<x>_error_pct = 100 * (forecast - actual) / actual.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

import polars as pl

from runner.core.stage import GateFailed
from runner.distill.forecast_sim import simulate_wall
from runner.engine.backend import open_cache
from runner.engine.cache import request_key
from runner.providers.pricing import unit_prices

REPORT = "forecast.json"
_Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = _Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a binomial proportion k/n."""
    if n <= 0:
        return None, None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def pilot_keep(scored: pl.DataFrame, filters) -> tuple[int, int, str]:
    """(kept, train rows, basis) of the pilot under the cheap filters (dedup within the pilot)."""
    train = scored.filter(pl.col("split") == "train") if "split" in scored.columns else scored
    rows = train.to_dicts()
    if filters is None:
        kept = sum(1 for r in rows if r.get("error") is None and r.get("exec_pass"))
        return kept, len(rows), "exec_pass (no filters given to the teacher stage)"
    patterns = [re.compile(p, re.I) for p in filters.exclude_regex]
    seen, kept = set(), 0
    for r in rows:
        if filters._cheap_reason(r, patterns) is None:
            key = (r.get("user"), r.get("clean_sql"))
            if not (filters.dedup and key in seen):
                kept += 1
            seen.add(key)
    basis = "filters.* cheap checks" + (" (the LLM filter is not forecast)" if filters.llm.enabled else "")
    return kept, len(rows), basis


def first_wave_corrected(pilot: pl.DataFrame, concurrency: int, cpu: float) -> list[float]:
    """Pilot latencies, the first window's corrected for its start-up burst: the engine starts up to
    `concurrency` requests at once and the k-th waits ~k x (client CPU per attempt) for the one event
    loop, which the steady state (and the replay, which serialises that CPU) does not see."""
    fresh = pilot.with_row_index("_k").filter(pl.col("error").is_null() & pl.col("latency_s").is_not_null())
    if "cache_hit" in fresh.columns and fresh["cache_hit"].all():
        return fresh["latency_s"].to_list()  # cached: latencies recorded by earlier runs, not this burst
    return [max(lat * 0.05, lat - (k * cpu if k < concurrency else 0.0))
            for k, lat in zip(fresh["_k"].to_list(), fresh["latency_s"].to_list())]


def _prompt_chars(req) -> int:
    return sum(len(m.get("content") or "") for m in req.messages)


def pilot_forecast(ctx, stage, prompts: pl.DataFrame, pilot: pl.DataFrame, scored: pl.DataFrame,
                   stats: dict[str, Any]) -> dict[str, Any]:
    """Forecast the rest of the teacher run from the pilot; write forecast.json and forecast.* metrics."""
    from runner.distill.vote import expand
    from runner.text2sql.prompt import build_request

    provider = stage.provider
    rest = prompts.filter(~pl.col("sample_id").is_in(pilot["sample_id"].to_list()))
    reqs = expand([build_request(r) for r in rest.to_dicts()], getattr(provider, "n", 1))
    identity = provider.cache_identity()
    keys = {request_key(identity, r.messages, r.sample): r for r in reqs}
    if provider.cache and keys:
        cache = open_cache(ctx.cache_dir)
        try:
            for k in cache.get_many(keys):
                keys.pop(k)
        finally:
            cache.close()
    todo = list(keys.values())
    n_req = len(todo)
    # The pilot's records (cached rows carry their original latency and usage: still a sample).
    answered = pilot.filter(pl.col("error").is_null())
    attempts, sent = int(stats.get("attempts") or 0), int(stats.get("requests") or 0)
    ok = sent - int(stats.get("errors") or 0)
    fail_p = (attempts - ok) / attempts if attempts else 0.0
    t_in = answered.filter(pl.col("tokens_in").is_not_null())
    pilot_chars = sum(_prompt_chars(build_request(r)) for r in t_in.to_dicts())
    tokens_in = (round(sum(_prompt_chars(r) for r in todo) * t_in["tokens_in"].sum() / pilot_chars)
                 if pilot_chars and t_in.height else None)
    t_out = answered["tokens_out"].drop_nulls()
    tokens_out = round(n_req * float(t_out.mean())) if t_out.len() else None
    p_in, p_out, cost_basis = unit_prices(provider)
    cost = (tokens_in * p_in + tokens_out * p_out) if None not in (p_in, tokens_in, tokens_out) else None
    per_req_tokens = ((tokens_in or 0) + (tokens_out or 0)) / n_req if n_req else 0.0
    cpu = stats.get("cpu_s")
    cpu_per_attempt = cpu / attempts if cpu is not None and attempts else 0.0
    lat = first_wave_corrected(pilot, int(provider.concurrency), cpu_per_attempt)
    sim = simulate_wall(lat, n_req, concurrency=int(provider.concurrency), fail_p=fail_p,
                        max_retries=int(provider.max_retries), backoff_base_s=float(provider.backoff_base_s),
                        backoff_max_s=float(provider.backoff_max_s), rpm=provider.rpm, tpm=provider.tpm,
                        tokens_per_request=per_req_tokens, cpu_per_attempt_s=cpu_per_attempt,
                        seed=ctx.stage_seed("forecast"))
    if getattr(provider, "mode", "online") == "batch":
        sim["basis"] = "batch mode: the provider's batch window decides (the online simulation is a lower bound)"
    kept, pilot_train, keep_basis = pilot_keep(scored, getattr(stage, "filters", None))
    planned = prompts.filter(pl.col("split") == "train").height
    lo, hi = wilson(kept, pilot_train)
    rate = kept / pilot_train if pilot_train else None
    fc = {
        "simulated": provider.kind == "simulated",
        "provider": provider.describe(), "mode": getattr(provider, "mode", "online"), "n": getattr(provider, "n", 1),
        "rows_remaining": rest.height, "requests": n_req, "cache_hits": len(reqs) - n_req if provider.cache else 0,
        "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": cost,
        "cost_basis": cost_basis if cost is not None else None,
        "cost_reason": None if cost is not None else cost_basis,
        "wall_s": sim["p50_s"], "wall_p10_s": sim["p10_s"], "wall_p90_s": sim["p90_s"], "wall_model": sim,
        "pilot": {"requests": sent, "attempts": attempts, "errors": stats.get("errors"),
                  "failure_rate_per_attempt": fail_p, "latencies": len(lat), "tokens_in": stats.get("tokens_in"),
                  "tokens_out": stats.get("tokens_out"), "cost_usd": stats.get("cost_usd"),
                  "wall_s": stats.get("wall_s"), "cpu_per_attempt_s": cpu_per_attempt},
        "keep_rate": rate, "keep_rate_ci95": [lo, hi], "keep_basis": keep_basis, "planned_train_rows": planned,
        "expected_kept": round(rate * planned) if rate is not None else None,
        "expected_kept_ci95": [math.floor(lo * planned), math.ceil(hi * planned)] if lo is not None else None,
    }
    fc["total_requests"] = sent + n_req
    spent = stats.get("cost_usd") if sent else 0.0  # a fully cached pilot spent nothing
    fc["total_cost_usd"] = cost + spent if cost is not None and spent is not None else None
    fc["total_wall_s"] = (stats.get("wall_s") or 0.0) + sim["p50_s"]
    fc["budget"] = budget_checks(stage.gate, fc)
    ctx.store.write_json(REPORT, fc)
    for k in ("requests", "tokens_in", "tokens_out", "cost_usd", "cost_reason", "wall_s", "wall_p10_s",
              "wall_p90_s", "total_requests", "total_cost_usd", "total_wall_s", "keep_rate", "expected_kept"):
        ctx.metrics.log(f"forecast.{k}", fc[k])
    ctx.metrics.log("forecast.wall_window_s", sim.get("window_p50_s"))
    ctx.metrics.log("forecast.wall_cpu_bound_s", sim.get("cpu_bound_s"))
    ctx.metrics.log("forecast.expected_kept_lo", fc["expected_kept_ci95"][0] if fc["expected_kept_ci95"] else None)
    ctx.metrics.log("forecast.expected_kept_hi", fc["expected_kept_ci95"][1] if fc["expected_kept_ci95"] else None)
    ctx.log.info("forecast for the rest (%d rows, %d requests to send): tokens in %s / out %s, cost %s, "
                 "wall %.1f s (p10-p90 %.1f-%.1f s), expected kept %s of %d train rows (95%% %s); full run: "
                 "cost %s, wall %.1f s. artifacts/%s", rest.height, n_req, tokens_in, tokens_out,
                 f"${cost:.4f}" if cost is not None else f"null ({cost_basis})", sim["p50_s"], sim["p10_s"],
                 sim["p90_s"], fc["expected_kept"], planned, fc["expected_kept_ci95"],
                 f"${fc['total_cost_usd']:.4f}" if fc["total_cost_usd"] is not None else "null",
                 fc["total_wall_s"], REPORT)
    return fc


def budget_checks(gate, fc: dict[str, Any]) -> dict[str, Any]:
    """Each budget limit with its forecast value and verdict (null limit: disabled)."""
    checks = []
    for name, value, over in (("max_cost_usd", fc["total_cost_usd"], lambda v, t: v > t),
                              ("max_wall_s", fc["total_wall_s"], lambda v, t: v > t),
                              ("min_expected_kept", fc["expected_kept"], lambda v, t: v < t)):
        limit = getattr(gate, name, None)
        if limit is None:
            checks.append({"check": name, "limit": None, "value": value, "passed": None, "status": "disabled"})
        elif value is None:  # e.g. no price known: the limit cannot be shown to hold
            checks.append({"check": name, "limit": limit, "value": None, "passed": False, "status": "not_measured"})
        else:
            bad = over(value, limit)
            checks.append({"check": name, "limit": limit, "value": value, "passed": not bad,
                           "status": "fail" if bad else "pass"})
    return {"passed": all(c["passed"] is not False for c in checks), "checks": checks}


def enforce_budget(ctx, gate, fc: dict[str, Any]) -> None:
    """Stop (GateFailed: status gated, exit 3) before any non-pilot request when a limit is exceeded."""
    budget = fc["budget"]
    ctx.metrics.log("gate.budget_passed", budget["passed"])
    if budget["passed"]:
        return
    why = "; ".join(f"{c['check']}: forecast {c['value']} vs limit {c['limit']}" if c["status"] == "fail"
                    else f"{c['check']}: cannot be forecast ({fc.get('cost_reason') or 'no value'})"
                    for c in budget["checks"] if c["passed"] is False)
    msg = (f"budget gate: {why}. Nothing beyond the pilot was sent. Report: artifacts/{REPORT}. Fix: raise or "
           "null the gate.max_cost_usd / gate.max_wall_s / gate.min_expected_kept limits, or a smaller run.")
    if gate.enforce:
        raise GateFailed(msg, budget)
    ctx.log.warning("%s (gate.enforce=false: continuing)", msg)


def report_actual(ctx, fc: dict[str, Any] | None, rest_stats: dict[str, Any]) -> None:
    """forecast.<x>_actual and forecast.<x>_error_pct for the part the forecast covered."""
    if not fc:
        return
    out = {}
    for k in ("requests", "tokens_in", "tokens_out", "cost_usd", "wall_s"):
        f, a = fc.get(k), rest_stats.get(k)
        err = 100.0 * (f - a) / a if f is not None and a else None
        ctx.metrics.log(f"forecast.{k}_actual", a)
        ctx.metrics.log(f"forecast.{k}_error_pct", err)
        out[k] = {"forecast": f, "actual": a, "error_pct": err}
    path = ctx.store.path(REPORT)
    if path.exists():
        report = json.loads(path.read_text())
        report["actual"] = out
        ctx.store.write_json(REPORT, report)
