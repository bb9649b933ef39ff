"""Causal structure discovery over item clusters (GOLEM), as in the story's side project.

Items are grouped into clusters (k-means on item vectors: a run's W_E rows or a text-embedding file; or given
labels: a column of the item metadata such as genres or topics, or an item → label file); the training parts
give a user × cluster matrix (binary by default: did the user read anything of the cluster); GOLEM learns a
linear DAG over the clusters from it. Written into --out: dag_edges.csv / dag_edges.parquet (source, target,
weight, cluster names, transition counts both ways), clusters.csv, item_clusters.csv, loss.csv, dag.npz and
summary.json (with SHD / TPR / FDR when the data carries a planted cluster DAG and --labels cluster is given).

The binary and count matrices ignore the order of a user's interactions: a DAG from them is co-occurrence
structure (directed by GOLEM's likelihood), not an observed order; the transition counts in the edge table show
whether the order agrees. `--matrix transitions` (arrivals into each cluster from another) sees the order: on
planted data it beats the shuffled-order control (benchmarks/causal_recovery.py, README).

    python -m analyses.causal runs/ml1m-L2 --clusters 250 --out reports/causal-ml1m
    python -m analyses.causal ../shared/data/ml-1m-5core --labels genres --out reports/causal-genres
    python -m analyses.causal synthetic --labels topic --iterations 20000 --max-minutes 5
    python -m analyses.causal data/docs --vectors emb/docs.parquet --clusters 250 --matrix counts
"""

from __future__ import annotations

import sys
from pathlib import Path

from circuits.causal.golem import GolemConfig
from circuits.errors import UserError

DEFAULT_OUT = "reports/causal"


def build_parser():
    from circuits.causal.matrix import MATRIX_KINDS
    from circuits.cli import ArgumentParser, add_config_arguments, add_data_arguments

    p = ArgumentParser(prog="python -m analyses.causal", description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="RUN_OR_DATA",
                   help="a run directory (its data; item vectors: its W_E), or a data source as for --data of the "
                        "train command ('synthetic', a log file or folder)")
    g = p.add_argument_group("clusters")
    g.add_argument("--clusters", type=int, default=250, metavar="K",
                   help="k-means clusters (default 250, capped by the number of items with training data)")
    g.add_argument("--vectors", metavar="W_E|FILE",
                   help="item vectors for k-means: W_E (a run's embedding rows; the default for a run) or an "
                        "embedding file (.parquet/.npy/.npz, see python -m circuits.embed)")
    g.add_argument("--labels", metavar="COLUMN|FILE",
                   help="given clusters instead of k-means: a column of the item metadata (e.g. genres, topic, "
                        "cluster; a list 'A, B' counts as its first value) or an item → label file (id, label)")
    g.add_argument("--cluster-seed", type=int, default=0, help="k-means seed (default 0)")
    g.add_argument("--kmeans-iter", type=int, default=20, help="k-means iterations (default 20)")
    g.add_argument("--matrix", default="binary", choices=MATRIX_KINDS,
                   help="user × cluster entries: binary (touched the cluster in training; default), counts, or "
                        "transitions (arrivals into the cluster from another one: the only kind that sees the order)")
    add_config_arguments(p.add_argument_group("GOLEM"), GolemConfig)
    add_data_arguments(p)
    for action in p._actions:  # the train command's wording of --data does not fit here
        if action.dest == "data":
            action.help = "with a run directory: where its data is now, if it moved (checked against the run)"
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the outputs (default {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def is_run_dir(source: str) -> bool:
    path = Path(source).expanduser()
    return path.is_dir() and (path / "config.json").exists() and (path / "model.safetensors").exists()


def load_source(args):
    """(run or None, dataset, the data source for item metadata, its item file or None)."""
    from circuits.cli import data_options
    from circuits.data import load_dataset

    if is_run_dir(args.source):
        from circuits.runs import load_run

        run = load_run(args.source)
        ds = run.dataset(args.data, args.items)
        options = run.config["data"]["options"]
        items = args.items or run.config["data"].get("items_absolute")
        return run, ds, run.data_source(args.data), items, options
    if args.data is not None:
        raise UserError(f"--data is for a run directory (where its data is now); {args.source} is not a run "
                        "(no config.json and model.safetensors in it): give the data as RUN_OR_DATA")
    if args.vectors == "W_E":
        raise UserError(f"--vectors W_E needs a run directory; {args.source} is data")
    return None, load_dataset(args.source, **data_options(args)), args.source, args.items, data_options(args)


def make_clusters(args, run, ds, source: str, items: str | None, options: dict):
    from circuits.causal.clusters import first_label, kmeans_clusters, label_clusters, read_labels

    if args.labels is not None and args.vectors is not None:
        raise UserError("give --labels or --vectors, not both")
    if args.labels is not None:
        path = Path(args.labels).expanduser()
        if path.suffix and path.exists() and path.is_file():
            return label_clusters(ds, read_labels(path), f"labels file {path}")
        from circuits.data import log_spec
        from circuits.data.readers import item_table

        spec = log_spec(source, format=options.get("format", "auto"), user_col=options.get("user_col"),
                        item_col=options.get("item_col"), time_col=options.get("time_col"), items=items,
                        title_col=options.get("title_col"), seed=options.get("seed", 0))
        table = item_table(spec)
        if args.labels not in table.columns:
            raise UserError(f"--labels {args.labels}: no such column in the item metadata (columns: "
                            f"{', '.join(map(str, table.columns))}) and no such file")
        return label_clusters(ds, dict(zip(table["item_id"].astype(str), table[args.labels].map(first_label))),
                              f"item metadata column {args.labels!r}")
    if args.clusters < 1:
        raise UserError(f"--clusters must be at least 1, got {args.clusters}")
    if args.vectors is None and run is None:
        raise UserError("data without a run has no item vectors: give --vectors FILE (text embeddings, python -m "
                        "circuits.embed) or --labels COLUMN|FILE")
    if args.vectors in (None, "W_E"):
        vectors = run.model.W_E.detach().cpu().numpy()
    else:
        from circuits.text import read_embeddings
        from circuits.text.embeddings import align

        vectors = align(read_embeddings(args.vectors), ds.item_ids, f"the items of {ds.name}")
    return kmeans_clusters(ds, vectors, k=args.clusters, seed=args.cluster_seed, n_iter=args.kmeans_iter)


def planted_metrics(source: str, clusters, adjacency) -> dict | None:
    """SHD / TPR / FDR against the planted cluster DAG of `source` (a folder written by
    `circuits.causal.planted.write_planted`), when the clusters are its true ones (--labels cluster)."""
    import numpy as np

    from circuits.causal.metrics import dag_metrics
    from circuits.causal.planted import planted_dag_of

    if clusters.info.get("source") != "item metadata column 'cluster'" or not Path(source).exists():
        return None
    truth = planted_dag_of(source)
    if truth is None:
        return None
    planted_id = clusters.names["name"].astype(int).to_numpy()  # our cluster c is planted cluster planted_id[c]
    est = np.zeros_like(truth)
    src, dst = np.nonzero(adjacency)
    est[planted_id[src], planted_id[dst]] = True
    return dag_metrics(est, truth)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from circuits.causal.discovery import discover, save_cluster_dag
    from circuits.cli import config_from_args

    golem = config_from_args(GolemConfig, args)
    run, ds, source, items, options = load_source(args)
    clusters = make_clusters(args, run, ds, source, items, options)
    dag = discover(ds, clusters, matrix=args.matrix, golem=golem, progress=not args.quiet)
    dag.summary["source"] = str(args.source)
    metrics = planted_metrics(source, clusters, dag.adjacency)
    if metrics is not None:
        dag.summary["planted"] = metrics
    edges = dag.edges()
    g = dag.summary["golem"]
    print(f"{ds.name}: {ds.n_users:,} users, {clusters.k} clusters ({clusters.method}), {args.matrix} matrix; "
          f"GOLEM-{golem.variant.upper()} {sum(g['iterations'].values()):,} steps in {g['seconds']:.1f} s "
          f"(stopped: {g['stopped']}): {len(edges)} edges")
    if metrics is not None:
        print(f"planted DAG: SHD {metrics['shd']}, TPR {metrics['tpr']:.3f}, FDR {metrics['fdr']:.3f} "
              f"({metrics['true_edges']} planted edges)")
    if len(edges):
        shown = edges.head(15)[["source_name", "target_name", "weight", "transitions", "reverse_transitions"]]
        print(shown.to_string(index=False, float_format="%.3f", max_colwidth=40))
    paths = save_cluster_dag(dag, ds, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
