"""Does GOLEM recover a planted cluster DAG, and not find one where there is none? SHD / TPR / FDR on planted
data (`circuits.causal.planted`) and its two controls, across the number of clusters k and of users, with time
and peak memory of each discovery (user × cluster matrix + GOLEM + thresholding), each in a fresh process.

- `planted`: users move from a cluster to its children in a random DAG (expected 1.5 children per cluster);
- `shuffled`: the same interactions, each user's order shuffled. The binary user × cluster matrix is the same
  (up to which two items per user are held out as validation / test targets): what GOLEM finds from it cannot
  come from the order;
- `independent`: clusters permuted across all interactions: the same frequencies and lengths, no structure.

The `binary` and `counts` matrices of `planted` and `shuffled` are the same; `--matrix transitions` (arrivals
into each cluster) differs between them, so it is the one that can tell an order from a co-occurrence.

Edges are scored at the paper's threshold 0.3 and at 0.1 (weights between binary columns are regression
coefficients between 0/1 variables, far smaller than the paper's Gaussian weights in ±[0.5, 2]).

    python benchmarks/causal_recovery.py --clusters 20 50 --users 2000 10000 --iterations 3000
    python benchmarks/causal_recovery.py --clusters 20 50 --users 2000 10000 --iterations 3000 --matrix transitions
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

ORDERS = ("planted", "shuffled", "independent")
THRESHOLDS = (0.3, 0.1)


def one(k: int, users: int, order: str, args) -> dict:
    """One discovery in this process: the metrics at each threshold, seconds, peak RSS."""
    import numpy as np

    from circuits.causal.clusters import label_clusters
    from circuits.causal.dag import threshold_to_dag
    from circuits.causal.discovery import discover
    from circuits.causal.golem import GolemConfig
    from circuits.causal.metrics import dag_metrics
    from circuits.causal.planted import PlantedConfig, planted_log

    data = planted_log(PlantedConfig(n_clusters=k, n_users=users, min_length=args.min_length,
                                     max_length=args.max_length, p_follow=0.7, p_stay=0.2, order=order,
                                     seed=args.seed))
    ds = data.dataset()
    clusters = label_clusters(ds, dict(zip(data.items["item_id"], data.items["cluster"].astype(str))))
    planted_id = clusters.names["name"].astype(int).to_numpy()
    start = time.perf_counter()
    cfg = GolemConfig(variant=args.variant, learning_rate=args.lr, iterations=args.iterations, threshold=0.0)
    dag = discover(ds, clusters, matrix=args.matrix, golem=cfg, progress=False)
    seconds = time.perf_counter() - start
    row = {"k": k, "users": users, "order": order, "interactions": int(len(ds.items)),
           "planted_edges": int(data.dag.sum()), "seconds": round(seconds, 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    B = np.zeros((k, k))
    B[np.ix_(dag.fitted, dag.fitted)] = dag.result.B
    for t in THRESHOLDS:
        W, _ = threshold_to_dag(B, t)
        est = np.zeros_like(data.dag)
        src, dst = np.nonzero(W)
        est[planted_id[src], planted_id[dst]] = True
        m = dag_metrics(est, data.dag)
        row.update({f"SHD@{t}": m["shd"], f"TPR@{t}": round(m["tpr"], 3), f"FDR@{t}": round(m["fdr"], 3),
                    f"edges@{t}": m["found_edges"]})
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clusters", type=int, nargs="+", default=[20, 50])
    p.add_argument("--users", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--variant", default="ev", choices=["ev", "nv", "nv-warm"])
    p.add_argument("--matrix", default="binary", choices=["binary", "counts", "transitions"],
                   help="user × cluster matrix kind (circuits.causal.matrix); only transitions sees the order")
    p.add_argument("--min-length", type=int, default=5)
    p.add_argument("--max-length", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", nargs=3, metavar=("K", "USERS", "ORDER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(int(args.one[0]), int(args.one[1]), args.one[2], args)))
        return 0
    import pandas as pd

    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    rows = []
    for k in args.clusters:
        for users in args.users:
            for order in ORDERS:
                out = subprocess.run([sys.executable, __file__, *passed, "--one", str(k), str(users), order],
                                     capture_output=True, text=True, check=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(f"  k={k} users={users} {order}: {rows[-1]['seconds']} s", file=sys.stderr)
    table = pd.DataFrame(rows)
    print(f"GOLEM-{args.variant.upper()}, {args.matrix} user × cluster matrix, lr {args.lr}, {args.iterations} "
          f"iterations; journeys {args.min_length}-{args.max_length} steps; seed {args.seed}")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
