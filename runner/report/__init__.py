"""Cross-run report: `python -m runner.report PATH...` (see runner/report/__main__.py)."""
from runner.report.build import Report, build_report, print_table

__all__ = ["Report", "build_report", "print_table"]
