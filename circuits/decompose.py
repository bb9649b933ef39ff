"""`python -m circuits.decompose RUN_DIR --seq-id ID`: where the correct item ranks under each component."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from circuits.cli import ArgumentParser, add_run_data_arguments, run_cli, run_dataset
from circuits.errors import UserError
from circuits.interp.decomposition import decompose_sequence
from circuits.interp.sources import format_gap
from circuits.runs import load_run


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
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.all and args.seq_id is None:
        raise UserError("give --seq-id ID (a user id of the log) or --all")
    run = load_run(args.run_dir)
    ds = run_dataset(run, args)
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
    from circuits.interp.ranks import rank_summary, rank_table

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
