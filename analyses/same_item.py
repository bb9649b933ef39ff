"""Same-item attention: does a head look at earlier occurrences of the current item (or near-copies of it)
more than its positional preferences alone would make it?

Per head, the attention mass that a query puts on keys holding the same item as the query (the query's own
position included) and on near-identical items (embedding cosine ≥ a threshold), averaged over every real
query position of a split's histories, under three patterns:

- `actual`: the model's attention;
- `positional`: the head's attention computed from the positional embeddings alone (q and k = W_pos rows),
  i.e. what the head's preference for recent / early positions gives on this history (static attention:
  its distance scores alone; none for static attention over time gaps only);
- `uniform`: equal weight on every visible item.

    python -m analyses.same_item runs/syn-L2 --out reports/same_item
"""

from __future__ import annotations

import sys

import pandas as pd
import plotly.graph_objects as go

from circuits.interp.sources import same_item_table


def same_item_attention(run, ds=None, split: str = "test", near_cosine: float = 0.9, max_users: int = 2048) -> pd.DataFrame:
    ds = ds or run.dataset()
    sp = ds.eval_split(split, run.model.cfg.n_ctx)
    table = same_item_table(run.model, sp.history[:max_users], near_cosine, times=sp.history_times[:max_users])
    return table.assign(run=run.path.name)


def same_item_figure(table: pd.DataFrame) -> go.Figure:
    from circuits.plots import LAYOUT, safe

    fig = go.Figure()
    for name, g in table.groupby("pattern", sort=False):
        fig.add_bar(name=name, x=[f"{safe(r)} · {h}" for r, h in zip(g["run"], g["head"])], y=g["same"].round(4))
    fig.update_layout(**LAYOUT, title="Attention on the query's own item: actual vs positions alone vs uniform",
                      barmode="group", yaxis_title="share of attention", height=400)
    return fig


def build_parser():
    from analyses.common import runs_parser

    p = runs_parser("python -m analyses.same_item", __doc__, "reports/same_item")
    p.add_argument("--near-cosine", type=float, default=0.9, help="embedding cosine for 'near-identical' (0.9)")
    p.add_argument("--max-users", type=int, default=2048, help="histories used (default 2048)")
    return p


def main(argv: list[str] | None = None) -> int:
    from analyses.common import load_runs, save

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    runs = load_runs(args, need_attention=True)
    table = pd.concat([same_item_attention(r, ds, split=args.split, near_cosine=args.near_cosine,
                                           max_users=args.max_users) for r, ds in runs], ignore_index=True)
    print(table.pivot_table(index=["run", "head"], columns="pattern", values=["same", "near"], sort=False)
          .to_string(float_format="%.3f"))
    print("\n" + save(args.out, {"same_item": table}, ("same_item", same_item_figure(table))))
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
