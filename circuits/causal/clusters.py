"""Items → clusters: k-means on item vectors (text embeddings, or a trained run's `W_E` rows), or given labels
(topics, genres). Each cluster is named by its most frequent titles (training counts).

`Clusters.item_cluster` is int64 [d_vocab]: the cluster of each vocabulary index, −1 for padding (index 0) and
for items in no cluster (no vector, no label). Clusters are numbered 0..k−1 by training interactions, most
first (ties by the smallest item index), so cluster 0 is the most read one and the numbering does not depend on
faiss' internal order.

k-means (faiss.Kmeans, seeded) is fitted on the items with training interactions only (k is capped by their
number: a cluster of never-read items would be a constant column); every item with a vector is then assigned to
its nearest centroid (L2), cold items included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float, Int

from circuits.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from circuits.data.sequences import SequenceDataset

NAME_TITLES = 3  # titles in a cluster's name


@dataclass
class Clusters:
    """Items → clusters (module docstring). `names`: one row per cluster (cluster, name, items,
    train_interactions, top_titles); `method`: "kmeans" or "labels"; `info`: how they were made."""

    item_cluster: Int[np.ndarray, " d_vocab"]
    names: pd.DataFrame
    method: str
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.names)


def kmeans_assign(vectors: Float[np.ndarray, "n dim"], k: int, seed: int = 0, n_iter: int = 20,
                  fit_rows: np.ndarray | None = None, n_redo: int = 1
                  ) -> tuple[Int[np.ndarray, " n"], Float[np.ndarray, "k dim"]]:
    """(label of every row [n], centroids [k, dim]): faiss k-means with `seed` fitted on `fit_rows` (default all;
    at least k of them; the best of `n_redo` starts), every row then assigned to its nearest centroid (exact L2)."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    fit = x if fit_rows is None else np.ascontiguousarray(x[fit_rows])
    if not 1 <= k <= len(fit):
        raise UserError(f"k-means: need 1 ≤ k ≤ {len(fit)} (the items fitted on), got k = {k}")
    # min_points_per_centroid=1: no warning for few points per cluster (250 clusters of ML-1M's 3,416 movies)
    km = faiss.Kmeans(x.shape[1], k, niter=n_iter, nredo=n_redo, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(fit)
    _, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64), km.centroids.copy()


def renumbered(item_cluster: Int[np.ndarray, " d_vocab"], counts: Int[np.ndarray, " d_vocab"]) -> Int[np.ndarray, " d_vocab"]:
    """Clusters numbered 0.. by training interactions, most first (ties: the cluster holding the smallest item
    index first); empty cluster numbers disappear; −1 stays −1."""
    item_cluster = np.asarray(item_cluster, dtype=np.int64)
    used = np.flatnonzero(item_cluster >= 0)
    old = np.unique(item_cluster[used])
    total = np.zeros(len(old), dtype=np.int64)
    where = np.searchsorted(old, item_cluster[used])
    np.add.at(total, where, counts[used])
    first = np.full(len(old), np.iinfo(np.int64).max)
    np.minimum.at(first, where, used)
    order = np.lexsort((first, -total))  # new number → old position
    new_of_old = np.empty(len(old), dtype=np.int64)
    new_of_old[order] = np.arange(len(old))
    out = np.full(len(item_cluster), -1, dtype=np.int64)
    out[used] = new_of_old[where]
    return out


def cluster_table(ds: SequenceDataset, item_cluster: Int[np.ndarray, " d_vocab"], labels: list[str] | None = None,
                  n_titles: int = NAME_TITLES) -> pd.DataFrame:
    """One row per cluster 0..k−1: items, train_interactions, top_titles (its `n_titles` most read titles,
    " · "-joined, ties by item index) and name (= `labels[c]` when given, else the top titles)."""
    import pandas as pd

    counts = ds.train_counts()
    k = int(item_cluster.max()) + 1 if (item_cluster >= 0).any() else 0
    used = np.flatnonzero(item_cluster >= 0)
    c = item_cluster[used]
    order = used[np.lexsort((used, -counts[used], c))]  # by cluster, most read first, then item index
    oc = item_cluster[order]
    start = np.searchsorted(oc, np.arange(k))
    rank = np.arange(len(order)) - start[oc]
    top = order[rank < n_titles]
    titles = [[] for _ in range(k)]
    for i in top:
        titles[item_cluster[i]].append(str(ds.titles[i]))
    top_titles = [" · ".join(t) for t in titles]
    return pd.DataFrame({
        "cluster": np.arange(k),
        "name": top_titles if labels is None else [str(x) for x in labels],
        "items": np.bincount(c, minlength=k),
        "train_interactions": np.bincount(c, weights=counts[used], minlength=k).astype(np.int64),
        "top_titles": top_titles,
    })


def kmeans_clusters(ds: SequenceDataset, vectors: Float[np.ndarray, "d_vocab dim"], k: int = 250, seed: int = 0,
                    n_iter: int = 20) -> Clusters:
    """k-means clusters of the items from `vectors` (row i = vocabulary index i; row 0, padding, unused): k
    capped by the number of items with training interactions (module docstring)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) != ds.d_vocab:
        raise UserError(f"item vectors: need one row per vocabulary entry ({ds.d_vocab}), got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise UserError("item vectors: NaN or infinite values")
    counts = ds.train_counts()
    with_data = np.flatnonzero(counts[1:] > 0)  # rows of vectors[1:]
    if len(with_data) == 0:
        raise UserError(f"{ds.name}: no item has training interactions")
    k_used = min(k, len(with_data))
    labels, _ = kmeans_assign(vectors[1:], k_used, seed=seed, n_iter=n_iter, fit_rows=with_data)
    item_cluster = renumbered(np.r_[-1, labels], counts)
    return Clusters(item_cluster, cluster_table(ds, item_cluster), "kmeans",
                    {"k_asked": k, "k": int(item_cluster.max()) + 1, "seed": seed, "n_iter": n_iter,
                     "fitted_on_items": int(len(with_data)), "dim": int(vectors.shape[1])})


def label_clusters(ds: SequenceDataset, labels: dict[str, str], what: str = "labels") -> Clusters:
    """Clusters from given labels: `labels` maps item id → label (an item without one, or with an empty one, is
    in no cluster); each cluster named by its label."""
    item_labels = np.array([str(labels.get(str(i), "") or "") for i in ds.item_ids], dtype=object)
    item_labels[0] = ""
    has = item_labels != ""
    if not has[1:].any():
        raise UserError(f"{what}: no item of {ds.name} has a label (ids e.g. {', '.join(map(str, ds.item_ids[1:4]))})")
    uniq, code = np.unique(item_labels[has].astype(str), return_inverse=True)
    raw = np.full(ds.d_vocab, -1, dtype=np.int64)
    raw[has] = code
    item_cluster = renumbered(raw, ds.train_counts())
    name_of = np.empty(int(item_cluster.max()) + 1, dtype=object)
    name_of[item_cluster[has]] = item_labels[has]
    return Clusters(item_cluster, cluster_table(ds, item_cluster, list(name_of)), "labels",
                    {"source": what, "k": len(uniq), "unlabelled_items": int((~has[1:]).sum())})


def clusters_by_id(ids, clusters, ds: SequenceDataset) -> Int[np.ndarray, " d_vocab"]:
    """The cluster of each vocabulary index of `ds` from pairs (item id, cluster): a DAG folder's item_clusters, a
    planted item table; padding and items without a pair get −1 (matched by id, so clusters made on one
    vocabulary fit another of the same log)."""
    by_id = dict(zip(np.asarray(ids, dtype=str), np.asarray(clusters, dtype=np.int64)))
    return np.array([-1] + [int(by_id.get(i, -1)) for i in ds.item_ids[1:]], dtype=np.int64)


def first_label(value) -> str:
    """A multi-valued label ("Animation, Children's, Comedy", MovieLens genres as the readers give them) → its
    first value ("Animation"); anything else as a string; missing → ""."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).split(",")[0].split("|")[0].strip()


def read_labels(path: str | Path) -> dict[str, str]:
    """An item → label file (CSV/TSV/Parquet/JSONL): its id column (item_id/movieId/item…) and a `label` column
    (else the only other column)."""
    from circuits.data.readers import read_item_table

    table = read_item_table(Path(path))
    others = [c for c in table.columns if c != "item_id"]
    col = "label" if "label" in others else (others[0] if len(others) == 1 else None)
    if col is None:
        raise UserError(f"{path}: need an item id column and a `label` column (columns: {', '.join(table.columns)})")
    return dict(zip(table["item_id"].astype(str), table[col].map(first_label)))
