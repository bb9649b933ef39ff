"""Same-item attention: does a head look at earlier occurrences of the current item (or near-copies of it)
more than its positional preferences alone would make it?

Per head, the attention mass that a query puts on keys holding the same item as the query (the query's own
position included), on near-identical items (cosine ≥ a threshold of the items' text embeddings for a text or
hybrid model, the story's question; of W_E for an id model) and, on synthetic data, on the query's planted
near-duplicates (the same story under another id: `twin`), averaged over every real query position of a
split's histories, under three patterns:

- `actual`: the model's attention;
- `positional`: the head's attention computed from the positional embeddings alone (q and k = W_pos rows),
  i.e. what the head's preference for recent / early positions gives on this history (static attention:
  its distance scores alone; none for static attention over time gaps only);
- `uniform`: equal weight on every visible item.

    python -m analyses.same_item runs/syn-L2 --out reports/same_item
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: `--help` needs none of them
    import pandas as pd
    import plotly.graph_objects as go
    import torch


def duplicate_groups(ds) -> np.ndarray | None:
    """int [d_vocab]: the planted duplicate group of each item (-1 = none), from the synthetic ground truth
    beside the data the dataset was read from (wherever it is now); None for data without planted duplicates."""
    from circuits.data.synthetic import ground_truth_of

    truth = ground_truth_of(ds.info["source"]["path"])
    if not truth or not truth.get("duplicate_groups"):
        return None
    index = {item: i for i, item in enumerate(ds.item_ids)}
    groups = np.full(ds.d_vocab, -1, dtype=np.int64)
    for g, members in enumerate(truth["duplicate_groups"]):
        groups[[index[m] for m in members if m in index]] = g
    return groups


def text_vectors(ds, source: str, columns: list[str] | None = None) -> torch.Tensor:
    """The items' text embeddings [d_vocab, d] from `source` ('minilm', a model folder: the texts of the data's
    item metadata; or an embedding file), in the dataset's vocabulary order: to judge "near-identical" by text
    for any run, an id model's included."""
    import torch

    from circuits.text import dataset_embeddings

    return torch.from_numpy(dataset_embeddings(source, ds, columns, progress=False)[0])


def same_item_attention(run, ds=None, split: str = "test", near_cosine: float = 0.9, max_users: int = 2048,
                        vectors: torch.Tensor | None = None, basis: str | None = None) -> pd.DataFrame:
    """`same_item_table` on a split's histories, with the planted duplicate groups where the data has them.
    `vectors` [d_vocab, d] (named `basis`) judge "near-identical"; default: a text model's own text embeddings,
    an id model's W_E."""
    from circuits.interp.sources import same_item_table

    ds = ds or run.dataset()
    sp = ds.eval_split(split, run.model.cfg.n_ctx)
    table = same_item_table(run.model, sp.history[:max_users], near_cosine, times=sp.history_times[:max_users],
                            vectors=vectors, groups=duplicate_groups(ds))
    if basis is None:
        basis = "text" if vectors is not None or run.model.cfg.uses_text else "W_E"
    return table.assign(run=run.path.name, near_basis=basis)


def same_item_figure(table: pd.DataFrame) -> go.Figure:
    from plotly.subplots import make_subplots

    from circuits.plots import LAYOUT, safe

    titles = {"same": "the query's own item", "near": "near-identical items (cosine ≥ threshold, own item included)",
              "twin_given": "its planted near-duplicate (another id), where one is visible"}
    measures = [m for m in titles if m in table]
    fig = make_subplots(rows=len(measures), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[f"attention on {titles[m]}" for m in measures])
    colours = {"actual": "#1f77b4", "positional": "#ff7f0e", "uniform": "#7f7f7f"}
    for row, measure in enumerate(measures, start=1):
        for name, g in table.groupby("pattern", sort=False):
            fig.add_bar(name=name, legendgroup=name, showlegend=row == 1, marker_color=colours.get(name),
                        x=[f"{safe(r)} · {h}" for r, h in zip(g["run"], g["head"])], y=g[measure].round(4),
                        row=row, col=1)
    fig.update_layout(**LAYOUT, title="Same-item attention: actual vs positions alone vs uniform",
                      barmode="group", height=260 * len(measures) + 80)
    fig.update_yaxes(title_text="share")
    return fig


def build_parser():
    from analyses.common import runs_parser

    p = runs_parser("python -m analyses.same_item", __doc__, "reports/same_item")
    p.add_argument("--near-cosine", type=float, default=0.9,
                   help="cosine for 'near-identical' (text embeddings of a text model, else W_E; default 0.9)")
    p.add_argument("--max-users", type=int, default=2048, help="histories used (default 2048)")
    p.add_argument("--embeddings", metavar="SOURCE",
                   help="judge 'near-identical' by these text embeddings for every run (an id run's too): 'minilm', "
                        "a sentence-transformers folder (encoding the data's item metadata) or an embedding file")
    p.add_argument("--text-cols", nargs="+", metavar="COL", help="metadata columns encoded (with --embeddings)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import pandas as pd

    from analyses.common import load_runs, save

    runs = load_runs(args, need_attention=True)
    tables = []
    for r, ds in runs:
        vectors = None if args.embeddings is None else text_vectors(ds, args.embeddings, args.text_cols)
        basis = None if args.embeddings is None else f"text ({Path(args.embeddings).name})"
        tables.append(same_item_attention(r, ds, split=args.split, near_cosine=args.near_cosine,
                                          max_users=args.max_users, vectors=vectors, basis=basis))
    table = pd.concat(tables, ignore_index=True)
    values = [c for c in ("same", "near", "twin", "twin_given") if c in table]
    print(table.pivot_table(index=["run", "near_basis", "head"], columns="pattern", values=values, sort=False)
          .to_string(float_format="%.3f"))
    print("\n" + save(args.out, {"same_item": table}, ("same_item", same_item_figure(table))))
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
