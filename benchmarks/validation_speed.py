"""Benchmark: the training loop's validation, the user-vector pass against the full forward, in one process.

    python benchmarks/validation_speed.py RUN [--repeat 3] [--threads 2]

Validation runs once per epoch on every validation user (6,040 on ML-1M), so its cost is a share of every
training budget. Two ways to the same numbers, alternating (slow, fast, slow, fast …) so drifting machine load
hits both alike, medians shown:

    full forward   evaluate_split(model_scorer(model, split), ..., n_sampled=0): every layer at every position of
                   batches of 512 users in split order (the validation of 0.5 and earlier)
    user vectors   circuits.training.loop.validate: model_ranks, histories in batches of similar length, the last
                   layer at the last query only

Prints wall seconds of each, the ratio fast / slow, and both NDCG@10 and HR@10 (they must agree to float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run directory (its data must be where the run recorded it, or moved with it)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of both (default 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()

    import torch

    from circuits.runs import load_run
    from circuits.scoring.evaluator import model_scorer
    from circuits.scoring.metrics import evaluate_split
    from circuits.training.loop import validate

    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run)
    model = run.model.eval()
    split = run.dataset().eval_split("valid", model.cfg.n_ctx)
    policy = run.seen_policy

    def slow():
        return evaluate_split(model_scorer(model, split), split, model.cfg.d_vocab, n_sampled=0)[f"full/{policy}"]

    def fast():
        return validate(model, split, policy)

    times: dict[str, list[float]] = {"full forward": [], "user vectors": []}
    got: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, fn in (("full forward", slow), ("user vectors", fast)):
            t = time.perf_counter()
            got[name] = fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"run {args.run}: {len(split):,} validation users, {model.cfg.d_vocab - 1:,} items, policy {policy}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    print("| validation | wall s | NDCG@10 | HR@10 |")
    print("|---|---|---|---|")
    for name in times:
        print(f"| {name} | {med[name]:.2f} | {got[name]['NDCG@10']:.6f} | {got[name]['HR@10']:.6f} |")
    print(f"user vectors / full forward: {med['user vectors'] / med['full forward']:.3f}")


if __name__ == "__main__":
    main()
