"""`python -m circuits.decompose RUN_DIR --seq-id ID`: where the correct item ranks under each component."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from circuits.attribution import component_logits, path_components, residual_components, target_ranks, with_groups
from circuits.errors import ArgumentParser, UserError, run_cli
from circuits.runs import load_run
from circuits.sources import format_gap


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m circuits.decompose",
        description="Split a run's logits exactly into embed, pos and per-head components (and the groups L0 = "
        "embed+pos, L1 = layer-0 heads, L2 = layer-1 heads, cumulative sums) and show where the correct item "
        "ranks under each. Sequence ids are the user ids of the log (python -c \"from circuits import "
        "load_run; print(load_run('RUN').dataset().user_ids[:20])\").",
    )
    p.add_argument("run_dir")
    p.add_argument("--seq-id", help="user id as in the log")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="whose target (default test)")
    p.add_argument("--pos", type=int, default=-1,
                   help="query position in the visible history (default -1: the last, predicting the split's target)")
    p.add_argument("--paths", action="store_true",
                   help="split each head of layer ≥ 1 by what its values read (embed, pos, each layer-0 head)")
    p.add_argument("--top", type=int, default=10, help="top items listed per component (default 10)")
    p.add_argument("--all", action="store_true", help="every user of the split: write a parquet table, print a summary")
    p.add_argument("--exclude-seen", action="store_true", help="with --all: rank among items not in the history")
    p.add_argument("--out", help="with --all: parquet path (default reports/<run>-ranks-<split>.parquet)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def visible_window(ds, user_id: str, split: str, n_ctx: int) -> tuple[int, int]:
    """(start, end): `ds.items[start:end]` is the history the model sees before the split's target, which is
    `ds.items[end]` (test: the user's last item; valid: the one before)."""
    u = ds.user_index(user_id)
    lo, hi = ds.offsets[u], ds.offsets[u + 1]
    if hi - lo < 3:
        raise UserError(f"sequence {user_id!r} has {hi - lo} items; evaluation needs at least 3")
    end = hi - (2 if split == "valid" else 1)
    return max(lo, end - n_ctx), end


def decompose_sequence(
    run, ds, user_id: str, split: str = "test", pos: int = -1, top: int = 10, paths: bool = False
) -> dict:
    """Everything the single-sequence view shows, as plain data (DataFrames)."""
    from circuits.sources import attention_sources, same_item_attention

    start, end = visible_window(ds, user_id, split, run.model.cfg.n_ctx)
    window = ds.items[start:end]
    if not -len(window) <= pos < len(window):
        raise UserError(f"--pos {pos} is outside the visible history of {len(window)} items")
    q = pos % len(window)
    target = int(ds.items[start + q + 1]) if start + q + 1 < end else int(ds.items[end])
    times = ds.timestamps[start:end]
    seq = pd.DataFrame({"position": np.arange(len(window)), "item_id": ds.item_ids[window], "title": ds.titles[window],
                        "gap_to_previous": [""] + [format_gap(g) for g in np.diff(times)]})
    items = torch.from_numpy(window[: q + 1])[None]
    decompose = path_components if paths else residual_components
    stack, labels = with_groups(*decompose(run.model, items, times=torch.from_numpy(times[: q + 1])[None]),
                                run.model.cfg.n_layers)
    logits = component_logits(run.model, stack)[:, 0]  # [n_comp, d_vocab]
    ranks = target_ranks(logits[:, None], torch.tensor([target]))[:, 0]
    scored = logits.clone()
    scored[:, 0] = float("-inf")
    top_items = scored.topk(min(top, ds.n_items), dim=-1).indices
    components = pd.DataFrame({
        "component": labels, "target_logit": logits[:, target].numpy(), "rank": ranks.numpy(),
        "top_items": [[ds.titles[i] for i in row.tolist()] for row in top_items],
    })
    sources = attention_sources(run.model, items[0], target, ds.titles, times[: q + 1])
    return {
        "user_id": user_id, "split": split, "query_position": q, "target_item": ds.item_ids[target],
        "target_title": ds.titles[target], "n_items": ds.n_items, "sequence": seq, "components": components,
        "sources": sources, "same_item_attention": same_item_attention(sources) if len(sources) else pd.DataFrame(),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.all and args.seq_id is None:
        raise UserError("give --seq-id ID (a user id of the log) or --all")
    run = load_run(args.run_dir)
    ds = run.dataset()
    if args.all:
        return _all(run, ds, args)
    view = decompose_sequence(run, ds, args.seq_id, args.split, args.pos, args.top, args.paths)
    if args.json:
        print(json.dumps({k: v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v
                          for k, v in view.items()}, indent=1, default=str))
        return 0
    print(f"sequence {view['user_id']} ({args.split}), query position {view['query_position']}: "
          f"target {view['target_item']} '{view['target_title']}' among {view['n_items']} items")
    print(view["sequence"].to_string(index=False))
    comps = view["components"].assign(top_items=lambda d: d.top_items.map(lambda t: " | ".join(t[:3])))
    print(f"\ncomponents (rank 1 = best among all items; ties pessimistic; top 3 of --top {args.top} shown):")
    print(comps.to_string(index=False, float_format="%.3f", max_colwidth=90))
    if len(view["sources"]):
        print("\nmain attention sources per head (weight × OV logit of the target = contribution):")
        s = view["sources"].sort_values(["head", "weight"], ascending=[True, False]).groupby("head").head(3)
        s = s.assign(gap=s["gap"].map(format_gap))
        print(s[["head", "key_pos", "title", "gap", "weight", "ov_logit", "contribution"]].to_string(
            index=False, float_format="%.3f", max_colwidth=50))
        print("\n" + view["same_item_attention"].to_string(float_format="%.3f"))
    return 0


def _all(run, ds, args) -> int:
    from circuits.ranks import rank_summary, rank_table

    split = ds.eval_split(args.split, run.model.cfg.n_ctx)
    table = rank_table(run.model, ds, split, exclude_seen=args.exclude_seen)
    out = Path(args.out or f"reports/{run.path.name}-ranks-{args.split}.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(out)
    summary = rank_summary(table)
    if args.json:
        print(json.dumps({"table": str(out), "summary": summary.reset_index().to_dict(orient="records"),
                          **summary.attrs}, indent=1))
        return 0
    print(f"{len(split)} users, {ds.n_items} items; per-user table: {out}")
    print(summary.to_string(float_format="%.3f"))
    for k, v in summary.attrs.items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
