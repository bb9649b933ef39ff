"""`python -m circuits.evaluate RUN_DIR`: full-ranking and sampled metrics of a run next to the baselines."""

from __future__ import annotations

import json
import sys

from circuits.cli import ArgumentParser, add_run_data_arguments, add_user_sample_arguments, run_cli, run_dataset


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m circuits.evaluate",
        description="Evaluate a run on validation and test: full ranking (seen items excluded / included) and "
        "the sampled protocol (100 never-touched items), next to the most-popular, repeat and Markov baselines "
        "(and, for a text or hybrid model, emb-mean and text-kNN over its text embeddings). Where some test targets "
        "never occur in training (a cold-start split), those (cold) and the others (warm) are also reported apart.",
    )
    p.add_argument("run_dir", help="a finished run directory (from python -m circuits.train)")
    p.add_argument("--json", action="store_true", help="print every number as JSON instead of tables")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled protocol's negatives (default 0)")
    p.add_argument("--emb-mean-k", type=int, metavar="K",
                   help="emb-mean baseline: mean of the last K history items' embeddings (default: the run's)")
    p.add_argument("--faiss", action="store_true",
                   help="also retrieve through faiss indexes as served (test split): exact inner product (the same "
                        "metrics as the full ranking), HNSW and IVF-PQ, each with recall@10 against exact, build "
                        "time and queries per second (needs faiss-cpu: pip install -e '.[text]')")
    add_user_sample_arguments(p, "evaluate")
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from circuits.data.sequences import sample_eval_users
    from circuits.runs import load_run
    from circuits.scoring.evaluator import PROTOCOLS, evaluate_run, metrics_table, sample_note
    from circuits.scoring.metrics import KS
    from circuits.scoring.retrieval import retrieval_table

    run = load_run(args.run_dir)
    ds = run_dataset(run, args)
    metrics = evaluate_run(run, ds, seed=args.seed, emb_mean_k=args.emb_mean_k, eval_users=args.eval_users,
                           eval_seed=args.eval_seed)
    users = sample_eval_users(ds, args.eval_users, args.eval_seed)
    retrieval = retrieval_table(run.model, ds.eval_split("test", run.model.cfg.n_ctx, users=users)) if args.faiss \
        else None
    note = sample_note(metrics)
    if args.json:
        extra = {} if retrieval is None else {"retrieval": retrieval.to_dict(orient="records")}
        print(json.dumps({"run": str(run.path), "data": ds.summary(), **metrics, **extra}, indent=2))
        return 0
    print(f"run {run.path}: {run.model.cfg.n_layers} layer(s), items {run.model.cfg.item_label}, {ds.name} "
          f"({ds.n_users} users, {ds.n_items} items)")
    for split in metrics["model"]:
        print(f"\n== model, {split} ({metrics['users'][split]} users{note}) ==")
        for protocol in PROTOCOLS:
            m = metrics["model"][split][protocol]
            cells = "  ".join(f"{name}@{k} {m[f'{name}@{k}']:.4f}" for name in ("HR", "NDCG", "MRR") for k in KS)
            print(f"{protocol:14s} {cells}")
    table = metrics_table(metrics, ("HR@10", "NDCG@10"))
    for metric in ("NDCG@10", "HR@10"):
        wide = table.pivot_table(index="system", columns=["split", "protocol"], values=metric, sort=False)
        print(f"\n== {metric}, model and baselines{note} ==")
        print(wide.to_string(float_format="%.4f"))
    print(f"\nprotocols: {metrics['protocols']['full/excluded']} | {metrics['protocols']['sampled']}; ties pessimistic")
    if retrieval is not None:
        print(f"\n== RETRIEVAL through faiss, test split{note} ({retrieval['n_items'].iloc[0]} items indexed; exact = the "
              "full ranking; qps = top-10 queries per second, batched) ==")
        print(retrieval.drop(columns="n_items").to_string(index=False, float_format="%.4f"))
    return 0


if __name__ == "__main__":
    run_cli(main)
