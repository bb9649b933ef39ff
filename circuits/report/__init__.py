"""Self-contained HTML reports (one file, plotly inlined once, no network at view time).

`build_report(run_dirs, out)` from Python; `python -m circuits.report RUN_DIR [RUN_DIR …]` from the shell.
"""

__all__ = ["build_report", "comparison_report", "run_report"]


def __getattr__(name: str):
    # imported on first use (PEP 562): `python -m circuits.report --help` must not import plotly and the model
    if name not in __all__:
        raise AttributeError(f"module 'circuits.report' has no attribute {name!r}")
    from circuits.report import build

    return getattr(build, name)
