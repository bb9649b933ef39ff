"""`python -m circuits.heads RUN_DIR`: circuit scores of every head (and Q/K/V composition, ablations)."""

from __future__ import annotations

import json
import sys

from circuits.cli import ArgumentParser, add_run_data_arguments, run_cli, run_dataset
from circuits.errors import UserError


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m circuits.heads", description="Circuit scores of every head of a run "
                       "(copying, self-attention, bigram agreement, positional share, induction, previous item; "
                       "Q/K/V composition for two or more layers; optional ablations on validation).")
    p.add_argument("run_dir")
    p.add_argument("--ablate", action="store_true", help="also zero- and mean-ablate each head on validation")
    p.add_argument("--json", action="store_true")
    p.add_argument("--score-items", type=int, default=None, metavar="N",
                   help="item statistics (self top, bigram agreement) over a seeded sample of N source items (default: "
                        "every item up to 50,000 items, else 1,000)")
    p.add_argument("--eval-users", type=int, default=0, metavar="N",
                   help="with --ablate: a seeded sample of N validation users (default 0: all)")
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from circuits.data.sequences import sample_eval_users
    from circuits.interp.ablation import ablation_table
    from circuits.interp.head_scores import composition, head_scores, static_weights
    from circuits.runs import load_run

    run = load_run(args.run_dir)
    model = run.model
    if model.cfg.n_layers == 0:
        raise UserError(f"{run.path} is a 0-layer model: it has no heads (its one circuit, the bigram table, is "
                        "listed by python -m circuits.pairs --circuit L0)")
    ds = run_dataset(run, args)
    first = ds.eval_split("valid", model.cfg.n_ctx, users=ds.eval_users()[:256])  # only these are built
    n_items = args.score_items if args.score_items is not None else (1000 if ds.n_items > 50_000 else 0)
    scores = head_scores(model, torch.from_numpy(first.history), items=n_items,
                         times=torch.from_numpy(first.history_times))
    valid = ds.eval_split("valid", model.cfg.n_ctx, users=sample_eval_users(ds, args.eval_users)) if args.ablate \
        else None
    comp = composition(model)
    static = static_weights(model) if model.cfg.has_static_scores else None
    abl = ablation_table(model, valid, ds.d_vocab, run.seen_policy) if args.ablate else None
    if args.json:
        print(json.dumps({"heads": scores.reset_index().to_dict(orient="records"),
                          "static_weights": None if static is None else static.to_dict(orient="records"),
                          "composition": comp.to_dict(orient="records"),
                          "ablation": None if abl is None else abl.to_dict(orient="records")}, indent=1))
        return 0
    print(scores.to_string(float_format="%.3f"))
    if static is not None:
        for kind, g in static.groupby("kind", sort=False):
            print(f"\nstatic attention scores per {kind} bucket (softmax over each query's visible keys):")
            print(g.pivot(index=["bucket", "label"], columns="head", values="score").to_string(float_format="%.3f"))
    if len(comp):
        print("\ncomposition (score − mean score of random matrices of the same shapes):")
        print(comp.pivot_table(index=["source", "target"], columns="kind", values="excess").to_string(float_format="%.3f"))
    if abl is not None:
        print("\nablations on validation:")
        print(abl.to_string(index=False, float_format="%.4f"))
    return 0


if __name__ == "__main__":
    run_cli(main)
