"""Depth sweep: does depth help? Train 0…N-layer models on the same data with the same budget and several
seeds, then compare validation and test NDCG@10 with the spread across seeds.

Each model is trained by the train command (`python -m circuits.train`, one process per model) into
`OUT/L{layers}-s{seed}`; finished runs are reused, so an interrupted sweep continues where it stopped.

    python -m analyses.depth --data synthetic --layers 0 1 2 3 4 --seeds 0 1 2 --max-minutes 3 --out runs/depth
    python -m analyses.depth --data ../shared/data/ml-1m-5core --max-minutes 0 --epochs 20 --out runs/depth-ml1m
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `--help` needs none of them
    import pandas as pd
    import plotly.graph_objects as go


def run_row(run) -> dict:
    policy = run.seen_policy
    m = run.metrics
    return {"run": str(run.path), "layers": run.model.cfg.n_layers, "heads": run.model.cfg.n_heads,
            "d_model": run.model.cfg.d_model, "attention": run.model.cfg.attention_label, "seed": run.config["train"]["seed"], "protocol": f"full/{policy}",
            "valid_NDCG@10": m["model"]["valid"][f"full/{policy}"]["NDCG@10"],
            "test_NDCG@10": m["model"]["test"][f"full/{policy}"]["NDCG@10"],
            "minutes": m["training"]["minutes"], "epochs_run": m["training"]["epochs_run"],
            "best_epoch": m["training"]["best_epoch"]}


def depth_table(runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, one row per depth: mean and standard deviation over seeds)."""
    import pandas as pd

    rows = pd.DataFrame([run_row(r) for r in runs])
    g = rows.groupby(["layers", "heads", "d_model", "attention", "protocol"])
    summary = g[["valid_NDCG@10", "test_NDCG@10"]].agg(["mean", "std"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    summary["seeds"] = g.size()
    return rows, summary.reset_index()


def sweep_runs(folder: str | Path) -> list:
    """The finished runs of a sweep folder (`L{layers}-s{seed}` with a metrics.json), by depth then seed."""
    from circuits.errors import UserError
    from circuits.runs import load_run

    dirs = [d for d in Path(folder).iterdir()
            if re.fullmatch(r"L\d+-s\d+", d.name) and (d / "metrics.json").exists()]  # not *.partial
    if not dirs:
        raise UserError(f"{folder}: no finished sweep runs (L<layers>-s<seed> folders); run python -m analyses.depth")
    runs = [load_run(d) for d in dirs]
    return sorted(runs, key=lambda r: (r.model.cfg.n_layers, r.config["train"]["seed"]))


def learning_curves(runs: list) -> pd.DataFrame:
    """Validation NDCG@10 after every epoch: one row per run × epoch (layers, seed, epoch, minutes, NDCG@10)."""
    import pandas as pd

    frames = [pd.read_csv(r.path / "epochs.csv")[["epoch", "minutes", "valid_NDCG@10"]].assign(
        layers=r.model.cfg.n_layers, seed=r.config["train"]["seed"]) for r in runs]
    return pd.concat(frames, ignore_index=True)


def curves_figure(curves: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    from circuits.plots import LAYOUT

    fig = go.Figure()
    mean = curves.groupby(["layers", "epoch"])["valid_NDCG@10"].agg(["mean", "min", "max"]).reset_index()
    for layers, g in mean.groupby("layers"):
        fig.add_scatter(x=g["epoch"], y=g["mean"].round(4), mode="lines", name=f"{layers} layers",
                        error_y={"type": "data", "symmetric": False, "array": (g["max"] - g["mean"]).round(4),
                                 "arrayminus": (g["mean"] - g["min"]).round(4), "thickness": 0.5})
    fig.update_layout(**LAYOUT, title="Validation NDCG@10 during training (mean over seeds, bars: min–max)",
                      xaxis_title="epoch", yaxis_title="valid NDCG@10", height=400)
    return fig


def depth_figure(summary: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    from circuits.plots import LAYOUT

    fig = go.Figure()
    for split in ("valid", "test"):
        fig.add_scatter(x=summary["layers"], y=summary[f"{split}_NDCG@10_mean"].round(4), name=split,
                        mode="lines+markers",
                        error_y={"type": "data", "array": summary[f"{split}_NDCG@10_std"].fillna(0).round(4)})
    fig.update_layout(**LAYOUT, title="NDCG@10 by depth (mean ± std over seeds)", xaxis_title="attention layers",
                      xaxis_dtick=1, yaxis_title="NDCG@10", height=400)
    return fig


def build_parser():
    from circuits.cli import ArgumentParser

    p = ArgumentParser(prog="python -m analyses.depth", description=__doc__.split("\n\n")[0],
                       epilog="Arguments after -- go to every train command (e.g. -- --heads 4 --d-model 128).")
    p.add_argument("--data", default="synthetic", help="as for the train command (default synthetic)")
    p.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-minutes", type=float, default=5.0,
                   help="training-time budget per model (default 5; 0 = none, then give --epochs)")
    p.add_argument("--epochs", type=int, default=0,
                   help="epoch budget per model (default 0 = none): unlike --max-minutes, the same cap whatever else "
                        "the machine is doing (early stopping on validation can still end a run sooner)")
    p.add_argument("--out", default="runs/depth", help="folder for the runs, depth.csv and depth.html")
    return p


def main(argv: list[str] | None = None) -> int:
    from analyses.common import save
    from circuits.errors import UserError
    from circuits.runs import load_run, partial_dir

    args, extra = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    if not args.max_minutes and not args.epochs:
        raise UserError("give a training budget: --max-minutes and/or --epochs")
    runs = []
    for seed in args.seeds:  # seed-major: an interrupted sweep already has whole depth curves for its first seeds
        for layers in args.layers:
            run_dir = out / f"L{layers}-s{seed}"
            if not (run_dir / "metrics.json").exists():
                cmd = [sys.executable, "-m", "circuits.train", "--layers", str(layers), "--data", args.data,
                       "--seed", str(seed), "--max-minutes", str(args.max_minutes), "--epochs", str(args.epochs or 100000),
                       "--out", str(run_dir), "--quiet", *extra]
                if partial_dir(run_dir).exists():
                    cmd.append("--resume")  # an interrupted sweep goes on where it stopped
                if subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL).returncode != 0:
                    raise UserError(f"training failed: {' '.join(cmd[1:])}")
            runs.append(load_run(run_dir))
    rows, summary = depth_table(runs)

    print(summary.to_string(index=False, float_format="%.4f"))
    print("\n" + save(out, {"depth": summary, "depth_runs": rows}, ("depth", depth_figure(summary))))
    print(f"report: python -m circuits.report --sweep {out}")
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
