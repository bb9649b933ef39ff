"""Self-contained HTML reports (one file, plotly inlined once, no network at view time).

`build_report(run_dirs, out)` from Python; `python -m circuits.report RUN_DIR [RUN_DIR …]` from the shell.
"""

from circuits.report.build import build_report, comparison_report, run_report

__all__ = ["build_report", "comparison_report", "run_report"]
