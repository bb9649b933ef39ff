"""Data simplicity diagnostics: how hard is next-item prediction on a log, before any model?

Per data set, over the test targets (each user's last item; history = everything before it):
- `repeat_rate` (A→A): the target equals the latest history item;
- `target_in_history`: the target is anywhere in the user's history;
- `unrelated_rate` (the AAAA→C case): no training user holds the target together with any history item;
- NDCG@10 (full ranking, under the data's seen-item policy) of the first-order bigram count model (`markov`)
  and of the order-free bag-of-history co-occurrence model (`cooccurrence`), next to most-popular;
- time: median gap between consecutive interactions, share of zero gaps (same timestamp), share of gaps
  under 30 minutes, and the mean session length when sessions break at gaps of 30 minutes or more.

    python -m analyses.diagnostics synthetic ../shared/data/ml-1m-5core ../shared/data/ml-100k --out reports/diagnostics
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: `--help` needs none of them
    import pandas as pd

SESSION_GAP_S = 30 * 60


def target_stats(ds, test) -> dict[str, float]:
    """A→A, target in history, and target unrelated to every history item, over the test targets."""
    import torch

    from circuits.scoring.baselines import cooccurrence

    co = cooccurrence(ds, normalise=False)
    repeat, in_hist, unrelated = [], [], []
    for lo in range(0, len(test), 512):
        rows = np.arange(lo, min(lo + 512, len(test)))
        history, target = test.history[rows], test.target[rows]
        repeat.append(history[:, -1] == target)
        in_hist.append((history == target[:, None]).any(1))
        scores = co(torch.from_numpy(history), rows)
        # co-occurrence count of the target with the history (+ popularity < 1): none at all ⇔ below 1
        unrelated.append(scores.gather(1, torch.from_numpy(target)[:, None])[:, 0].numpy() < 1)
    return {"test_users": len(test), "repeat_rate": float(np.concatenate(repeat).mean()),
            "target_in_history": float(np.concatenate(in_hist).mean()),
            "unrelated_rate": float(np.concatenate(unrelated).mean())}


def time_stats(ds) -> dict[str, float]:
    same_user = np.repeat(np.arange(ds.n_users), ds.lengths)
    gaps = np.diff(ds.timestamps)[same_user[1:] == same_user[:-1]]
    if not len(gaps):
        return {"median_gap_s": float("nan"), "zero_gap_share": float("nan"), "gap_under_30min": float("nan"),
                "mean_session_length": float("nan")}
    breaks = (gaps >= SESSION_GAP_S).sum()
    return {"median_gap_s": float(np.median(gaps)), "zero_gap_share": float(np.mean(gaps == 0)),
            "gap_under_30min": float(np.mean(gaps < SESSION_GAP_S)),
            "mean_session_length": float(len(ds.items) / (ds.n_users + breaks))}


def model_stats(ds, test) -> dict[str, float]:
    from circuits.scoring.baselines import baseline_scorer
    from circuits.scoring.evaluator import resolve_seen_policy
    from circuits.scoring.metrics import evaluate_split

    policy = resolve_seen_policy("auto", ds)
    out = {"policy": policy}
    for name in ("most-popular", "markov", "cooccurrence"):
        out[f"{name}_NDCG@10"] = evaluate_split(baseline_scorer(name, ds), test, ds.d_vocab, n_sampled=0)[
            f"full/{policy}"]["NDCG@10"]
    return out


def diagnostics(ds, name: str | None = None) -> pd.DataFrame:
    """One row of every statistic for one data set."""
    import pandas as pd

    test = ds.eval_split("test", int(ds.lengths.max()))  # each user's whole history before the test target
    s = ds.summary()
    row = {"data": name or s.get("name"), "users": s["users"], "items": s["items"], "interactions": s["interactions"],
           **target_stats(ds, test), **model_stats(ds, test), **time_stats(ds)}
    return pd.DataFrame([row])


def format_value(v) -> str:
    """A statistic for display: floats to 4 decimals, integers with thousands separators."""
    return f"{v:,.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def diagnostics_figure(table: pd.DataFrame):
    import plotly.graph_objects as go

    from circuits.plots import LAYOUT, safe

    cols = ["repeat_rate", "target_in_history", "unrelated_rate", "most-popular_NDCG@10", "markov_NDCG@10",
            "cooccurrence_NDCG@10", "gap_under_30min"]
    fig = go.Figure()
    for _, row in table.iterrows():
        fig.add_bar(name=safe(row["data"]), x=cols, y=[round(float(row[c]), 4) for c in cols])
    fig.update_layout(**LAYOUT, title="How simple is each data set?", barmode="group", height=420)
    return fig


def build_parser():
    from circuits.cli import ArgumentParser

    p = ArgumentParser(prog="python -m analyses.diagnostics", description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="'synthetic' or a log path / MovieLens folder, as for --data")
    p.add_argument("--out", default="reports/diagnostics", help="folder for diagnostics.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import pandas as pd

    from analyses.common import save
    from circuits.data import load_dataset

    table = pd.concat([diagnostics(load_dataset(d), Path(d).name) for d in args.data], ignore_index=True)

    shown = table.map(format_value)
    print(shown.set_index("data").T.to_string())
    print("\n" + save(args.out, {"diagnostics": table}, ("diagnostics", diagnostics_figure(table))))
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
