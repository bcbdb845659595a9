"""The table printed at the end of a run (rich): status, headline metrics, stage times."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_SKIP_PREFIX = ("version.", "run.git_commit", "run.host", "run.platform", "run.started_at", "run.ended_at")


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_summary(metrics: dict[str, Any], timing: dict[str, Any], run_dir: Path,
                  console: Console | None = None) -> None:
    console = console or Console(stderr=False, soft_wrap=True)
    status = metrics.get("status")
    colour = {"ok": "green", "gated": "yellow"}.get(status, "red")
    t = Table(title=f"run {metrics.get('experiment')} - [{colour}]{status}[/{colour}]", show_lines=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        if k.startswith(_SKIP_PREFIX) or isinstance(v, (dict, list)):
            continue
        t.add_row(k, _fmt(v))
    console.print(t)
    st = Table(title="stage timing")
    for col in ("stage", "wall_s", "share", "items", "items/s", "p50", "p95"):
        st.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in timing.get("stages", {}).items():
        lat = s.get("latency") or {}
        st.add_row(name, _fmt(s["wall_s"]), _fmt(s["share"]), _fmt(s["items"]), _fmt(s["items_per_s"]),
                   _fmt(lat.get("p50")), _fmt(lat.get("p95")))
    st.add_row("total", _fmt(timing.get("total_wall_s")), "1", "", "", "", "")
    console.print(st)
    console.print(f"outputs: {run_dir}")
