"""What every experiment CLI shares: the run arguments, loading runs, and writing tables and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from circuits.cli import ArgumentParser, add_run_data_arguments
from circuits.errors import UserError

if TYPE_CHECKING:  # imported where used: `--help` needs none of them
    import pandas as pd
    import plotly.graph_objects as go


def runs_parser(prog: str, doc: str, out: str) -> ArgumentParser:
    """A parser with RUN_DIR…, --split, --out and the run-data arguments (--data, --items); `doc` is the module
    docstring (its first paragraph is shown)."""
    p = ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--out", default=out, help=f"folder for the tables (CSV) and the figure (HTML); default {out}")
    add_run_data_arguments(p)
    return p


def load_runs(args, need_attention: bool = False) -> list[tuple]:
    """(run, its dataset) for every RUN_DIR of `args`; the datasets from --data/--items when given (all the
    runs then share that data). A 0-layer run where attention is needed is a one-line error."""
    from circuits.runs import load_run

    runs = [load_run(d) for d in args.run_dirs]
    if need_attention:
        flat = [str(r.path) for r in runs if r.model.cfg.n_layers == 0]
        if flat:
            raise UserError(f"a 0-layer model has no attention layer to test ({', '.join(flat)}); give runs with 1 "
                            "or more layers")
    return [(r, r.dataset(args.data, args.items)) for r in runs]


def save(out: str | Path, tables: dict[str, pd.DataFrame], figure: tuple[str, go.Figure]) -> str:
    """Write each table as NAME.csv and the figure as a self-contained NAME.html; return a 'wrote …' line."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        paths.append(out / f"{name}.csv")
    name, fig = figure
    fig.write_html(out / f"{name}.html", include_plotlyjs=True)
    paths.append(out / f"{name}.html")
    return "wrote " + ", ".join(str(p) for p in paths)
