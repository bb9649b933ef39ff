"""The whole study on one dataset: clusters → user × cluster matrix (training parts) → GOLEM → a cluster DAG
with names, and what a report section or a "DAG logits" component reads back.

`ClusterDAG.adjacency` is float64 [k, k] over *all* clusters (edge a → b at [a, b], GOLEM's weight; 0 for no
edge and for clusters left out of the fit), `clusters.item_cluster` int64 [d_vocab] maps each vocabulary index to
its cluster (−1: none), so a component can look up A[cluster(current item), cluster(candidate)] directly.
Files of `save_cluster_dag` (written into a temporary folder beside `out`, then moved in, so a failure leaves
nothing half-written): dag_edges.csv / .parquet (source, target, weight, names, transition counts both ways),
clusters.csv (the cluster table with in- and out-degree and whether it was fitted), item_clusters.csv
(item_id, title, cluster), loss.csv (the loss history), dag.npz (adjacency, B, item_cluster, item_ids) and
summary.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float

from circuits.causal.golem import GolemConfig

if TYPE_CHECKING:
    import pandas as pd

    from circuits.causal.clusters import Clusters
    from circuits.causal.golem import GolemResult
    from circuits.data.sequences import SequenceDataset

OUTPUT_FILES = ("dag_edges.csv", "dag_edges.parquet", "clusters.csv", "item_clusters.csv", "loss.csv", "dag.npz",
                "summary.json")


@dataclass
class ClusterDAG:
    """A discovered cluster DAG (module docstring). `fitted`: the clusters GOLEM saw (columns with variance);
    `transitions`: int64 [k, k] training transition counts between clusters (the order GOLEM's matrix does not
    see); `result`: the GOLEM fit over `fitted`; `summary`: what was done, sizes, time, memory."""

    clusters: Clusters
    adjacency: Float[np.ndarray, "k k"]
    fitted: np.ndarray
    transitions: np.ndarray
    result: GolemResult | None
    summary: dict = field(default_factory=dict)

    def edges(self) -> pd.DataFrame:
        """source, target (cluster ids), weight, source_name, target_name, transitions (source → target),
        reverse_transitions; strongest |weight| first."""
        import pandas as pd

        src, dst = np.nonzero(self.adjacency)
        w = self.adjacency[src, dst]
        order = np.argsort(-np.abs(w), kind="stable")
        src, dst, w = src[order], dst[order], w[order]
        names = self.clusters.names["name"].to_numpy()
        return pd.DataFrame({"source": src, "target": dst, "weight": w, "source_name": names[src],
                             "target_name": names[dst], "transitions": self.transitions[src, dst],
                             "reverse_transitions": self.transitions[dst, src]})

    def cluster_table(self) -> pd.DataFrame:
        A = self.adjacency != 0
        fitted = np.zeros(len(A), dtype=bool)
        fitted[self.fitted] = True
        return self.clusters.names.assign(out_degree=A.sum(1), in_degree=A.sum(0), fitted=fitted)


def discover(ds: SequenceDataset, clusters: Clusters, matrix: str = "binary", golem: GolemConfig | None = None,
             progress: bool = True) -> ClusterDAG:
    """GOLEM on the user × cluster matrix of `ds`'s training parts (`circuits.causal.matrix`); clusters whose
    column has no variance (nobody, or everybody, in them) are left out of the fit and get no edges."""
    from circuits.causal.dag import is_dag
    from circuits.causal.golem import fit_golem
    from circuits.causal.matrix import cluster_transitions, user_cluster_matrix
    from circuits.errors import UserError

    golem = GolemConfig() if golem is None else golem
    start = time.perf_counter()
    k = clusters.k
    X = user_cluster_matrix(ds, clusters.item_cluster, k, matrix)
    n = X.shape[0]
    mean = np.asarray(X.mean(0)).ravel()
    second = np.asarray(X.multiply(X).mean(0)).ravel()
    fitted = np.flatnonzero(second - mean**2 > 1e-12 * max(1.0, float(second.max(initial=0.0))))
    if len(fitted) < 2:
        raise UserError(f"{ds.name}: fewer than 2 of the {k} clusters vary across users; nothing to learn")
    result = fit_golem(X[:, fitted], golem, columns=fitted, progress=progress)
    A = np.zeros((k, k))
    A[np.ix_(fitted, fitted)] = result.weights
    T = cluster_transitions(ds, clusters.item_cluster, k).toarray()
    summary = {
        "data": ds.name, "fingerprint": ds.fingerprint, "users": int(n), "items": int(ds.n_items),
        "clusters": {"method": clusters.method, "k": k, **clusters.info},
        "matrix": matrix, "matrix_density": float(X.nnz / max(1, n * k)),
        "fitted_clusters": int(len(fitted)), "left_out_clusters": sorted(set(range(k)) - set(fitted.tolist())),
        "golem": result.summary(), "is_dag": is_dag(A),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return ClusterDAG(clusters, A, fitted, T, result, summary)


def save_cluster_dag(dag: ClusterDAG, ds: SequenceDataset, out: str | Path) -> list[Path]:
    """Write the files of the module docstring into `out` (created if needed; other files there are left alone)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".causal.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        edges = dag.edges()
        edges.to_csv(tmp / "dag_edges.csv", index=False)
        edges.to_parquet(tmp / "dag_edges.parquet", index=False)
        dag.cluster_table().to_csv(tmp / "clusters.csv", index=False)
        import pandas as pd

        pd.DataFrame({"item_id": ds.item_ids[1:], "title": ds.titles[1:],
                      "cluster": dag.clusters.item_cluster[1:]}).to_csv(tmp / "item_clusters.csv", index=False)
        (dag.result.history_table() if dag.result is not None else pd.DataFrame()).to_csv(tmp / "loss.csv", index=False)
        np.savez(tmp / "dag.npz", adjacency=dag.adjacency, B=_full_B(dag), item_cluster=dag.clusters.item_cluster,
                 item_ids=np.asarray(ds.item_ids, dtype=str), fitted=dag.fitted)
        (tmp / "summary.json").write_text(json.dumps(dag.summary, indent=2, default=_json_default) + "\n")
        paths = []
        for name in OUTPUT_FILES:
            os.replace(tmp / name, out / name)
            paths.append(out / name)
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _full_B(dag: ClusterDAG) -> np.ndarray:
    B = np.zeros_like(dag.adjacency)
    if dag.result is not None:
        B[np.ix_(dag.fitted, dag.fitted)] = dag.result.B
    return B


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def dag_fingerprint(folder: str | Path) -> str | None:
    """The fingerprint of the data a DAG folder was discovered on (its summary.json), None where it has none."""
    path = Path(folder) / "summary.json"
    return json.loads(path.read_text()).get("fingerprint") if path.exists() else None


def load_cluster_dag(folder: str | Path) -> tuple[Float[np.ndarray, "k k"], np.ndarray, np.ndarray, pd.DataFrame]:
    """(adjacency [k, k], item_cluster [d_vocab], item_ids [d_vocab], cluster table) from a folder written by
    `save_cluster_dag`: what a report section or a DAG-logits component needs."""
    import pandas as pd

    from circuits.errors import UserError

    folder = Path(folder)
    try:
        with np.load(folder / "dag.npz") as z:
            adjacency, item_cluster, item_ids = z["adjacency"], z["item_cluster"], z["item_ids"]
        table = pd.read_csv(folder / "clusters.csv", keep_default_na=False)
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{folder} is not a cluster DAG folder (python -m analyses.causal): {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}") from None
    return adjacency, item_cluster, item_ids, table
