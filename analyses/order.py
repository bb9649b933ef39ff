"""Order sensitivity: how much of what a trained model uses depends on the order of the history?

Each model is evaluated on the same users with its history (the visible `n_ctx` items) transformed:
`shuffled_keep_last` (earlier items permuted, the latest kept in place), `shuffled` (all permuted),
`reversed`, `deduplicated` (only the latest occurrence of each item, in order). Targets, candidate sets and
the seen-item lists stay as they are, so only the model's input changes. A model that treats the history as a
bag loses nothing under `shuffled_keep_last`. Timestamps (read by time-gap attention) stay with the positions:
shuffling and reversing change which item came at each time, not the times; de-duplication drops the
timestamps of the dropped occurrences.

    python -m analyses.order runs/syn-L0 runs/syn-L1 runs/syn-L2 --out reports/order
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: `--help` needs neither
    import pandas as pd
    import plotly.graph_objects as go

TRANSFORMS = ("intact", "shuffled_keep_last", "shuffled", "reversed", "deduplicated")


def transform_order(items: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Indices into one unpadded history (oldest first) that give its transformed version."""
    n = len(items)
    if kind == "intact":
        return np.arange(n)
    if kind == "shuffled":
        return rng.permutation(n)
    if kind == "shuffled_keep_last":
        return np.concatenate([rng.permutation(n - 1), [n - 1]]) if n else np.arange(0)
    if kind == "reversed":
        return np.arange(n)[::-1]
    if kind == "deduplicated":
        _, first_from_end = np.unique(items[::-1], return_index=True)
        return np.sort(n - 1 - first_from_end)
    raise ValueError(f"unknown transform {kind!r} ({', '.join(TRANSFORMS)})")


def transform_history(items: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One unpadded history (oldest first) → its transformed version."""
    return items[transform_order(items, kind, rng)]


def transform_histories(history: np.ndarray, kind: str, seed: int = 0, times: np.ndarray | None = None):
    """Left-padded [n, n_ctx] histories → the same shape, each row's real items transformed. With `times`
    (aligned with `history`), return `(history, times)`: times stay at their positions except under
    de-duplication, where the kept occurrences keep theirs."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(history)
    out_times = None if times is None else np.zeros_like(times)
    for r, row in enumerate(history):
        real = row != 0
        idx = transform_order(row[real], kind, rng)
        if len(idx):
            out[r, -len(idx) :] = row[real][idx]
            if times is not None:
                t = times[r][real]
                out_times[r, -len(idx) :] = t[idx] if kind == "deduplicated" else t
    return out if times is None else (out, out_times)


def order_sensitivity(run, ds=None, split: str = "test", seed: int = 0, intact: dict | None = None) -> pd.DataFrame:
    """Rows: transform × metric under the run's full-ranking policy, with the change against `intact`. Each
    transform is one pass of `circuits.interp.last_position.model_ranks`; `intact`: the intact model's ranks on
    the same split when already computed (`model_ranks(...)["intact"]`, e.g. by the report's shared pass)."""
    import pandas as pd

    from circuits.interp.last_position import model_ranks
    from circuits.scoring.metrics import metrics_from_ranks

    ds = ds or run.dataset()
    policy = run.seen_policy
    base = ds.eval_split(split, run.model.cfg.n_ctx)
    rows = []
    for kind in TRANSFORMS:
        if kind == "intact" and intact is not None:
            ranks = intact
        else:
            history, times = transform_histories(base.history, kind, seed, base.history_times)
            ranks = model_ranks(run.model, dataclasses.replace(base, history=history, history_times=times))["intact"]
        m = metrics_from_ranks(ranks[f"full/{policy}"])
        rows.append({"run": run.path.name, "layers": run.model.cfg.n_layers, "transform": kind,
                     "protocol": f"full/{policy}", "HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"]})
    out = pd.DataFrame(rows)
    intact_ndcg = out.loc[out["transform"] == "intact", "NDCG@10"].iloc[0]
    out["NDCG@10_change"] = out["NDCG@10"] - intact_ndcg
    out["NDCG@10_relative"] = out["NDCG@10"] / intact_ndcg if intact_ndcg else np.nan
    return out


def order_figure(table: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    from circuits.plots import LAYOUT, safe

    fig = go.Figure()
    for run, g in table.groupby("run", sort=False):
        fig.add_bar(name=safe(run), x=g["transform"], y=g["NDCG@10"].round(4),
                    text=[f"{v:+.1%}" for v in g["NDCG@10_relative"] - 1], textposition="outside")
    fig.update_layout(**LAYOUT, title="Test NDCG@10 with the history transformed", barmode="group",
                      yaxis_title="NDCG@10", height=400)
    return fig


def build_parser():
    from analyses.common import runs_parser

    p = runs_parser("python -m analyses.order", __doc__, "reports/order")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import pandas as pd

    from analyses.common import load_runs, save

    runs = load_runs(args)
    table = pd.concat([order_sensitivity(r, ds, split=args.split, seed=args.seed) for r, ds in runs],
                      ignore_index=True)
    print(table.to_string(index=False, float_format="%.4f"))
    print("\n" + save(args.out, {"order": table}, ("order", order_figure(table))))
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
