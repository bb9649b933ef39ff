"""`python -m circuits.evaluate RUN_DIR`: full-ranking and sampled metrics of a run next to the baselines."""

from __future__ import annotations

import json
import sys

from circuits.cli import ArgumentParser, add_run_data_arguments, run_cli, run_dataset


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m circuits.evaluate",
        description="Evaluate a run on validation and test: full ranking (seen items excluded / included) and "
        "the sampled protocol (100 never-touched items), next to the most-popular, repeat and Markov baselines.",
    )
    p.add_argument("run_dir", help="a finished run directory (from python -m circuits.train)")
    p.add_argument("--json", action="store_true", help="print every number as JSON instead of tables")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled protocol's negatives (default 0)")
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from circuits.runs import load_run
    from circuits.scoring.evaluator import PROTOCOLS, evaluate_run, metrics_table
    from circuits.scoring.metrics import KS

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    run = load_run(args.run_dir)
    ds = run_dataset(run, args)
    metrics = evaluate_run(run, ds, seed=args.seed)
    if args.json:
        print(json.dumps({"run": str(run.path), "data": ds.summary(), **metrics}, indent=2))
        return 0
    print(f"run {run.path}: {run.model.cfg.n_layers} layer(s), {ds.name} ({ds.n_users} users, {ds.n_items} items)")
    for split in ("valid", "test"):
        print(f"\n== model, {split} ==")
        for protocol in PROTOCOLS:
            m = metrics["model"][split][protocol]
            cells = "  ".join(f"{name}@{k} {m[f'{name}@{k}']:.4f}" for name in ("HR", "NDCG", "MRR") for k in KS)
            print(f"{protocol:14s} {cells}")
    table = metrics_table(metrics, ("HR@10", "NDCG@10"))
    for metric in ("NDCG@10", "HR@10"):
        wide = table.pivot_table(index="system", columns=["split", "protocol"], values=metric, sort=False)
        print(f"\n== {metric}, model and baselines ==")
        print(wide.to_string(float_format="%.4f"))
    print(f"\nprotocols: {metrics['protocols']['full/excluded']} | {metrics['protocols']['sampled']}; ties pessimistic")
    return 0


if __name__ == "__main__":
    run_cli(main)
