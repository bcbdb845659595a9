"""The table printed at the end of a run (rich): status, headline metrics, stage times."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_SKIP_PREFIX = ("version.", "run.git_commit", "run.host", "run.platform", "run.started_at", "run.ended_at")


def format_value(v: Any, none: str = "null") -> str:
    """How tables show a metric: 4 significant digits for floats, `none` for a missing value."""
    if v is None:
        return none
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
        t.add_row(k, format_value(v))
    console.print(t)
    st = Table(title="stage timing")
    for col in ("stage", "wall_s", "share", "items", "items/s", "p50", "p95"):
        st.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in timing.get("stages", {}).items():
        lat = s.get("latency") or {}
        st.add_row(name, format_value(s["wall_s"]), format_value(s["share"]), format_value(s["items"]), format_value(s["items_per_s"]),
                   format_value(lat.get("p50")), format_value(lat.get("p95")))
    st.add_row("total", format_value(timing.get("total_wall_s")), "1", "", "", "", "")
    console.print(st)
    for note in metrics.get("run.notices") or []:  # e.g. a simulated teacher: its numbers are not measurements
        console.print(Text(f"NOTE: {note}", style="bold yellow"))
    console.print(f"outputs: {run_dir}")
