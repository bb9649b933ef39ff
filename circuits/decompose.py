"""`python -m circuits.decompose RUN_DIR --seq-id ID`: where the correct item ranks under each component."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from circuits.cli import ArgumentParser, add_run_data_arguments, add_user_sample_arguments, run_cli, run_dataset
from circuits.errors import UserError

if TYPE_CHECKING:  # torch, pandas and the model are imported in `main`: `--help` needs none of them
    from circuits.interp.ranks import RankArrays


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
    p.add_argument("--out", help="with --all: a .parquet file (default reports/<run>-ranks-<split>.parquet) or, for "
                   "any other name, a folder of Parquet parts (part-00000.parquet, …; pandas.read_parquet reads it "
                   "whole)")
    add_user_sample_arguments(p, "with --all: rank")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.all and args.seq_id is None:
        raise UserError("give --seq-id ID (a user id of the log) or --all")
    if args.top < 1:
        raise UserError(f"--top must be 1 or more, got {args.top}")
    import pandas as pd

    from circuits.interp.frames import format_gap

    if args.all or args.paths:
        from circuits.interp.decomposition import decompose_sequence
        from circuits.runs import load_run

        run = load_run(args.run_dir)
        ds = run_dataset(run, args)
        if args.all:
            return _all(run, ds, args)
        view = decompose_sequence(run, ds, args.seq_id, args.split, args.pos, args.top, args.paths)
    else:  # one sequence, direct components: numpy from the weights, no torch (importing it alone takes 1.5 s)
        from circuits.interp.decomposition_numpy import decompose_sequence_numpy
        from circuits.runs import load_run_numpy, recorded_dataset

        path, config, model = load_run_numpy(args.run_dir)
        ds = recorded_dataset(config, path, getattr(args, "data", None), getattr(args, "items", None))
        view = decompose_sequence_numpy(model, ds, args.seq_id, args.split, args.pos, args.top)
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
    from circuits.data.sequences import sample_eval_users
    from circuits.interp.ranks import rank_arrays

    users = sample_eval_users(ds, args.eval_users, args.eval_seed)
    split = ds.eval_split(args.split, run.model.cfg.n_ctx, users=users)
    out = Path(args.out or f"reports/{run.path.name}-ranks-{args.split}.parquet")
    _check_out(out)  # before the work: a path that cannot be written is one error line
    ranks = rank_arrays(run.model, ds, split, exclude_seen=args.exclude_seen, progress=not args.json)
    eligible = int((ds.lengths >= 3).sum())
    meta = {"run": str(run.path), "split": args.split, "exclude_seen": bool(args.exclude_seen),
            "n_items": int(ds.n_items), "users": len(split), "eligible_users": eligible,
            "eval_users": int(args.eval_users) if users is not None else 0, "eval_seed": int(args.eval_seed),
            "components": ranks.labels}
    write_rank_table(ranks, out, meta)
    summary = ranks.summary()
    if args.json:
        print(json.dumps({"table": str(out), **{k: meta[k] for k in ("users", "eligible_users", "eval_users",
                                                                     "eval_seed")},
                          "summary": summary.reset_index().to_dict(orient="records"), **summary.attrs}, indent=1))
        return 0
    who = (f"a seeded sample of {len(split):,} of {eligible:,} users (--eval-users {args.eval_users} --eval-seed "
           f"{args.eval_seed})" if users is not None else f"{len(split)} users")
    print(f"{who}, {ds.n_items} items; per-user table: {out}")
    print(summary.to_string(float_format="%.3f"))
    for k, v in summary.attrs.items():
        print(f"{k}: {v:.3f}")
    return 0


ROWS_PER_PART = 2**20  # rows per Parquet row group (one file) or part (a folder)
META_KEY = b"circuits"  # the schema metadata entry with the table's provenance (run, split, user sample)


def write_rank_table(ranks: RankArrays, out: Path, meta: dict) -> Path:
    """The long rank table (`rank_table`'s rows, in its order) as one Parquet file when `out` ends in
    `.parquet` (row groups of ROWS_PER_PART rows, written one at a time) or else as a folder of parts
    `part-00000.parquet`, … of ROWS_PER_PART rows; `meta` (JSON) in the schema metadata under `circuits`.
    Written as `out.tmp` and renamed (a crash leaves no partial table); memory: one part at a time."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    _remove(tmp)
    single = out.suffix == ".parquet"
    if not single:
        tmp.mkdir()
    schema, writer = None, None
    try:
        for p, lo in enumerate(range(0, max(len(ranks), 1), ROWS_PER_PART)):
            part = ranks.frame(lo, lo + ROWS_PER_PART)
            if schema is None:
                schema = pa.Schema.from_pandas(part, preserve_index=False)
                schema = schema.with_metadata({**schema.metadata, META_KEY: json.dumps(meta).encode()})
            table = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
            if single:
                writer = writer or pq.ParquetWriter(tmp, schema)
                writer.write_table(table)
            else:
                pq.write_table(table, tmp / f"part-{p:05d}.parquet")
    finally:
        if writer is not None:
            writer.close()
    if out.is_dir():  # an earlier table of parts (checked above): replace it
        old = out.with_name(out.name + ".old")
        _remove(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.replace(out)
    return out


def _check_out(out: Path) -> None:
    """A folder of parts may only replace a folder of parts (never, say, `reports/`); a file only a file."""
    if out.suffix == ".parquet":
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name ending in .parquet or a folder name")
    elif out.is_file():
        raise UserError(f"--out {out} is a file; a name without .parquet is a folder of Parquet parts")
    elif out.is_dir() and any(not (f.is_file() and f.name.startswith("part-") and f.suffix == ".parquet")
                              for f in out.iterdir()):
        raise UserError(f"--out {out} is a folder with other files in it; give a new or a rank-table folder")


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


if __name__ == "__main__":
    run_cli(main)
