"""DAG logits: does a discovered cluster DAG improve next-item scores? (the story's side project, its last step)

Adds w · A[cluster(last item), cluster(candidate)] (`circuits.causal.dag_logits`) to the Markov baseline and,
given a run, to the run's model (the story added them to a 0-layer model and to a baseline), and ranks the
validation and test targets over all items (full ranking, the run's seen-item policy; `auto` for data). The
weight w: none (w = 0); chosen on validation NDCG@10 from a grid (0 included; what a checkpoint choice does); and,
for a model, learned (maximum likelihood of training targets, the model frozen). Test figures come with the
paired difference to w = 0 and its standard error over users.

Written into --out (default: the DAG folder): dag_logits.csv (one row per system and weight rule),
dag_logits_grid.csv (validation and test NDCG@10 at every w of the grid) and dag_logits.json.

    python -m analyses.causal runs/ml1m-L0 --clusters 250 --out reports/causal-ml1m
    python -m analyses.dag_logits reports/causal-ml1m runs/ml1m-L0
    python -m analyses.dag_logits reports/causal-genres ../shared/data/ml-1m-5core --values binary
"""

from __future__ import annotations

import sys
from pathlib import Path

from circuits.errors import UserError

POLICIES = ("auto", "excluded", "included")
PLANTED_OUT = "reports/dag-logits-planted"


def build_parser():
    from circuits.causal.dag import DAG_VALUES
    from circuits.cli import ArgumentParser, add_data_arguments

    p = ArgumentParser(prog="python -m analyses.dag_logits", description=__doc__.split("\n\n")[0])
    p.add_argument("dag", metavar="DAG_FOLDER",
                   help="a folder written by python -m analyses.causal, or 'planted': the planted cluster DAG of "
                        "data written by python -m circuits.synthetic --preset planted (the truth, binary: what "
                        "DAG logits can give at best)")
    p.add_argument("source", metavar="RUN_OR_DATA",
                   help="a run directory (its model and the Markov baseline get DAG logits) or the data the DAG "
                        "was discovered on (the Markov baseline alone); must be the DAG's data (fingerprint)")
    p.add_argument("--values", default="weight", choices=DAG_VALUES,
                   help="A's entries: GOLEM's edge weights (default) or 1 for every edge (binary)")
    p.add_argument("--seen-policy", default=None, choices=POLICIES,
                   help="seen items in the ranking (default: the run's; auto for data: included where users "
                        "repeat items)")
    p.add_argument("--fit-windows", type=int, default=512,
                   help="training windows for the learned weight of a model (default 512, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit's window sample (default 0)")
    add_data_arguments(p)
    for action in p._actions:
        if action.dest == "data":
            action.help = "with a run directory: where its data is now, if it moved (checked against the run)"
    p.add_argument("--out", default=None, help=f"folder for the tables (default: DAG_FOLDER; {PLANTED_OUT} for "
                                                 "the planted DAG)")
    return p


def planted_dag(run, ds, source: str, data: str | None = None):
    """(adjacency [k, k] of the planted truth, item_cluster [d_vocab]) of planted data (`circuits.causal.planted`)."""
    import numpy as np
    import pandas as pd

    from circuits.causal.clusters import clusters_by_id
    from circuits.causal.planted import planted_dag_of

    folder = Path(run.data_source(data) if run is not None else source).expanduser()
    truth = planted_dag_of(folder) if folder.exists() else None
    items = (folder if folder.is_dir() else folder.parent) / "items.tsv"
    if truth is None or not items.exists():
        raise UserError(f"{folder} has no planted cluster DAG (ground_truth.json with cluster_dag, items.tsv): "
                        "'planted' is for data written by python -m circuits.synthetic --preset planted")
    table = pd.read_csv(items, sep="\t", dtype={"item_id": str})
    return truth.astype(np.float64), clusters_by_id(table["item_id"], table["cluster"], ds)


def load_source(args):
    """(run or None, dataset)."""
    from analyses.causal import is_run_dir
    from circuits.cli import data_options
    from circuits.data import load_dataset

    if is_run_dir(args.source):
        from circuits.runs import load_run

        run = load_run(args.source)
        return run, run.dataset(args.data, args.items)
    if args.data is not None:
        raise UserError(f"--data is for a run directory; {args.source} is not a run: give the data as RUN_OR_DATA")
    return None, load_dataset(args.source, **data_options(args))


def paired(ranks, base, k: int = 10) -> tuple[float, float]:
    """Mean and standard error over users of NDCG@k(ranks) − NDCG@k(base)."""
    import numpy as np

    def ndcg(r):
        return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)

    d = ndcg(ranks) - ndcg(base)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import numpy as np
    import pandas as pd

    from circuits.causal.clusters import clusters_by_id
    from circuits.causal.dag_logits import WEIGHT_GRID, DagTerm, fit_dag_weight, weight_ranks
    from circuits.causal.discovery import dag_fingerprint, load_cluster_dag
    from circuits.scoring.baselines import baseline_scorer
    from circuits.scoring.evaluator import model_scorer, resolve_seen_policy
    from circuits.scoring.metrics import metrics_from_ranks

    if args.fit_windows < 1:
        raise UserError(f"--fit-windows must be at least 1, got {args.fit_windows}")
    run, ds = load_source(args)
    if args.dag == "planted":
        folder = Path(args.out or PLANTED_OUT)
        adjacency, item_cluster = planted_dag(run, ds, args.source, args.data)
    else:
        folder = Path(args.dag).expanduser()
        adjacency, item_cluster, item_ids, _ = load_cluster_dag(folder)
        want = dag_fingerprint(folder)
        if want is not None and want != ds.fingerprint:
            raise UserError(f"the DAG in {folder} was discovered on other data (fingerprint {want}) than {ds.name} "
                            f"({ds.fingerprint}): DAG logits must come from the same training split")
        item_cluster = clusters_by_id(item_ids[1:], item_cluster[1:], ds)  # row 0: padding
    term = DagTerm(adjacency, item_cluster, args.values)
    if run is not None:
        policy = args.seen_policy or run.config["train"].get("resolved_seen_policy", "auto")
        n_ctx = run.model.cfg.n_ctx
    else:
        policy, n_ctx = args.seen_policy or "auto", int(min(200, ds.lengths.max()))
    policy = resolve_seen_policy(policy, ds)
    splits = {s: ds.eval_split(s, n_ctx) for s in ("valid", "test")}

    systems = {"markov": lambda split: baseline_scorer("markov", ds)}
    if run is not None:
        run.model.eval()
        systems[f"model ({run.model.cfg.n_layers} layers)"] = lambda split: model_scorer(run.model, split)
    rows, grid_rows, fits = [], [], {}
    for name, make in systems.items():
        weights = WEIGHT_GRID
        if name != "markov":  # the learned weight is ranked in the same pass as the grid
            fits[name] = fit_dag_weight(run.model, ds, term, windows=args.fit_windows, seed=args.seed)
            weights = WEIGHT_GRID + (fits[name]["weight"],)
        ranks = {s: weight_ranks(make(sp), term, sp, weights, policy) for s, sp in splits.items()}
        ndcg = {s: [metrics_from_ranks(r)["NDCG@10"] for r in ranks[s]] for s in ranks}
        for i, w in enumerate(WEIGHT_GRID):
            grid_rows.append({"system": name, "weight": w, "valid_NDCG@10": ndcg["valid"][i],
                              "test_NDCG@10": ndcg["test"][i]})
        chosen = int(np.argmax(ndcg["valid"][: len(WEIGHT_GRID)]))  # the first best: w = 0 (the grid's first) wins ties
        rules = [("none", 0), ("chosen on validation", chosen)]
        if name in fits:
            rules.append(("learned", len(WEIGHT_GRID)))
        for rule, i in rules:
            mv, mt = metrics_from_ranks(ranks["valid"][i]), metrics_from_ranks(ranks["test"][i])
            delta, se = paired(ranks["test"][i], ranks["test"][0])
            rows.append({"system": name, "weight_rule": rule, "weight": weights[i], "valid_NDCG@10": mv["NDCG@10"],
                         "test_NDCG@10": mt["NDCG@10"], "test_HR@10": mt["HR@10"],
                         "test_delta_NDCG@10": delta, "test_delta_se": se})
    table, grid = pd.DataFrame(rows), pd.DataFrame(grid_rows)
    planted = args.dag == "planted"
    summary = {"dag": "planted" if planted else str(folder), "source": str(args.source), "data": ds.name,
               "fingerprint": ds.fingerprint, "values": "binary (the planted truth)" if planted else args.values,
               "policy": policy, "protocol": f"full/{policy}",
               "clusters": int(len(adjacency)), "edges": int((adjacency != 0).sum()),
               "users": {s: len(sp) for s, sp in splits.items()}, "learned": fits,
               "rows": table.to_dict(orient="records")}
    print(f"{ds.name}: DAG of {summary['clusters']} clusters, {summary['edges']} edges ({args.values}); full "
          f"ranking, seen {policy}, {len(splits['test']):,} test users")
    print(table.to_string(index=False, float_format="%.4f"))
    paths = write_tables(Path(args.out).expanduser() if args.out else folder, table, grid, summary)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def write_tables(out: Path, table, grid, summary: dict) -> list[Path]:
    """dag_logits.csv, dag_logits_grid.csv, dag_logits.json into `out`, each written whole then moved in."""
    import json
    import os

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, write in (("dag_logits.csv", lambda p: table.to_csv(p, index=False)),
                        ("dag_logits_grid.csv", lambda p: grid.to_csv(p, index=False)),
                        ("dag_logits.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))):
        tmp = out / f".{name}.tmp-{os.getpid()}"
        write(tmp)
        os.replace(tmp, out / name)
        paths.append(out / name)
    return paths


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
