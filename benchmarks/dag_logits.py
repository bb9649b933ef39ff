"""Do DAG logits help next-item scores where a cluster order is planted, and where it is not? The shell commands a
team would run, per setting:

    python -m circuits.synthetic --preset planted --out D --items-per-cluster I --n-users U --order O
    python -m circuits.train --layers 0 --data D --out D/run-L0
    python -m analyses.causal D --labels cluster --out D/dag            (GOLEM on the binary user × cluster matrix)
    python -m analyses.dag_logits D/dag D/run-L0                         (the discovered DAG)
    python -m analyses.dag_logits planted D/run-L0                       (the planted truth: the best a DAG can give)

`planted`: users move from a cluster to its children in a random DAG; `shuffled`: the same interactions, each
user's order shuffled (no order to find, the same co-occurrence). Printed: test NDCG@10 (full ranking, seen
included: these users re-read items) of the Markov baseline and the 0-layer model without DAG logits and with
them (weight chosen on validation; learned for the model), the paired difference and its standard error.

    python benchmarks/dag_logits.py --work /tmp/dag-logits --items-per-cluster 10 100 --users 500 2000

Data and GOLEM settings as in benchmarks/causal_recovery.py (journeys of 5–15 steps, p_follow 0.7, p_stay 0.2;
GOLEM-EV, 3,000 steps at learning rate 0.01), so the discovered DAGs are the ones whose recovery it reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def sh(*argv: str) -> None:
    subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL)


def setting(work: Path, items: int, users: int, order: str, args) -> list[dict]:
    d = work / f"i{items}-u{users}-{order}"
    sh("-m", "circuits.synthetic", "--preset", "planted", "--out", str(d), "--n-clusters", str(args.clusters),
       "--items-per-cluster", str(items), "--n-users", str(users), "--order", order, "--p-follow", "0.7",
       "--p-stay", "0.2", "--min-length", "5", "--max-length", "15", "--seed", str(args.seed))
    sh("-m", "circuits.train", "--layers", "0", "--data", str(d), "--out", str(d / "run-L0"), "--overwrite", "--quiet")
    sh("-m", "analyses.causal", str(d), "--labels", "cluster", "--out", str(d / "dag"), "--iterations",
       str(args.iterations), "--learning-rate", str(args.lr), "--quiet")
    planted = json.loads((d / "dag" / "summary.json").read_text()).get("planted", {})
    rows = []
    for dag, out in (("discovered", d / "dag"), ("planted", d / "dag-planted")):
        sh("-m", "analyses.dag_logits", str(d / "dag") if dag == "discovered" else "planted", str(d / "run-L0"),
           "--out", str(out))
        summary = json.loads((out / "dag_logits.json").read_text())
        for r in summary["rows"]:
            rows.append({"items/cluster": items, "users": users, "order": order, "dag": dag,
                         "tpr": planted.get("tpr"), "fdr": planted.get("fdr"), **r})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/dag-logits", help="folder for the data, runs and DAGs")
    p.add_argument("--clusters", type=int, default=20)
    p.add_argument("--items-per-cluster", type=int, nargs="+", default=[10, 100])
    p.add_argument("--users", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--orders", nargs="+", default=["planted", "shuffled"])
    p.add_argument("--iterations", type=int, default=3000, help="GOLEM steps (default 3000, as causal_recovery.py)")
    p.add_argument("--lr", type=float, default=1e-2, help="GOLEM learning rate (default 0.01, as causal_recovery.py)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for items in args.items_per_cluster:
        for users in args.users:
            for order in args.orders:
                start = time.perf_counter()
                rows += setting(work, items, users, order, args)
                print(f"  items/cluster {items}, users {users}, {order}: {time.perf_counter() - start:.0f} s",
                      file=sys.stderr)
    import pandas as pd

    t = pd.DataFrame(rows)
    base = t[t.weight_rule == "none"].set_index(["items/cluster", "users", "order", "dag", "system"])["test_NDCG@10"]
    t = t[t.weight_rule != "none"].copy()
    t["without"] = [base[k] for k in zip(t["items/cluster"], t.users, t.order, t.dag, t.system)]
    t["delta ± se"] = [f"{d:+.4f} ± {s:.4f}" for d, s in zip(t["test_delta_NDCG@10"], t.test_delta_se)]
    cols = ["items/cluster", "users", "order", "dag", "tpr", "fdr", "system", "weight_rule", "weight", "without",
            "test_NDCG@10", "delta ± se"]
    print(t[cols].to_string(index=False, float_format="%.4f"))
    t.to_csv(work / "dag_logits_benchmark.csv", index=False)


if __name__ == "__main__":
    main()
