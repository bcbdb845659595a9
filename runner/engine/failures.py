"""What a stage does with rows whose requests failed after retries (the `error` column).

Two checks, both ending the run as `failed` (StageFailed: a message, no traceback):
1. transport: most requests failed because the provider cannot be reached or refuses us
   (connection/DNS/TLS, 401/403, 404 model). That says nothing about the teacher's quality, so
   it is checked before any gate, with the endpoint and the fix in the message.
2. error rate: more than `max_error_rate` of the rows have no answer. Such a run is never `ok`,
   whatever the gate says (also with gate=off).
"""
from __future__ import annotations

from typing import Any

import polars as pl

from runner.core.stage import StageFailed
from runner.engine.types import ProviderError

# Why each transport kind happens and what to change.
_FIXES = {
    "connection": ("cannot connect (connection refused, DNS, TLS or proxy)",
                   "start the server or fix provider.api_base / the network (URL, port, certificates)"),
    "auth": ("authentication failed (401/403)",
             "set a valid key in the variable named by provider.api_key_env (allowed for this model)"),
    "not_found": ("model or endpoint not found (404)",
                  "fix provider.model (the route and model name) or provider.api_base (e.g. the /v1 suffix)"),
}


def error_summary(df: pl.DataFrame) -> dict[str, Any]:
    """Counts over a generation frame: rows, errors, transport errors, most common kind and a sample."""
    errors = df.filter(pl.col("error").is_not_null()).with_columns(pl.col("error_kind").fill_null("other"))
    out = {"rows": df.height, "errors": errors.height, "transport": 0, "top_kind": None, "sample": None}
    if errors.height:
        out["transport"] = errors.filter(pl.col("error_kind").is_in(sorted(ProviderError.TRANSPORT))).height
        out["top_kind"] = top = errors["error_kind"].value_counts(sort=True).row(0)[0]
        # An original error, not a breaker's "not sent" row, best names what happened.
        sample = errors.filter(pl.col("error_kind") == top).sort(pl.col("error").str.starts_with("not sent"))
        out["sample"] = sample["error"][0]
    return out


def check_errors(df: pl.DataFrame, *, provider: Any, max_error_rate: float, phase: str, key: str) -> None:
    """Raise StageFailed on a transport failure of most rows, or an error rate above the limit."""
    s = error_summary(df)
    if not s["rows"] or not s["errors"]:
        return
    if s["transport"] * 2 > s["rows"]:
        what, fix = _FIXES.get(s["top_kind"], _FIXES["connection"])
        raise StageFailed(
            f"teacher provider {what}: {s['transport']} of {s['rows']} {phase} requests failed "
            f"({s['top_kind']}) at {provider.endpoint()}; e.g. {s['sample']}. Fix: {fix}. "
            "Nothing was judged: this is not a quality result.")
    rate = s["errors"] / s["rows"]
    if rate > max_error_rate:
        raise StageFailed(
            f"{s['errors']} of {s['rows']} {phase} requests ({rate:.0%}) failed after retries, above "
            f"{key}={max_error_rate} (most often {s['top_kind']}: {s['sample']}). Fix: see the error "
            f"column of the teacher rows; raise provider.max_retries / provider.timeout_s, lower "
            f"provider.concurrency or provider.rpm, or raise {key}.")
