"""The data GOLEM learns from: one row per user, one column per cluster, from the *training* parts only (the
last two items of users with ≥ 3 interactions are validation and test targets; see `circuits.data.sequences`).

- `binary` (the story's): X[u, c] = 1 if user u touched any item of cluster c in training;
- `counts`: X[u, c] = how many of u's training interactions fell in cluster c;
- `transitions` (transition counts): X[u, c] = how many of u's consecutive training pairs move *into* c from
  another cluster (the user's row of the cluster transition counts, off the diagonal, summed over the source):
  visits of c that begin a run, so a stay in c counts once, wherever it starts.

`binary` and `counts` ignore the order of a user's interactions (a shuffled history gives the same row);
`transitions` does not (a shuffled history has more, shorter runs). The order across users lives in
`cluster_transitions`: T[a, b] = consecutive training pairs (item of a → item of b), across every user.
Built from the flat arrays (`items`, `offsets`) with numpy and scipy.sparse, no per-user loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Int

if TYPE_CHECKING:
    import scipy.sparse as sp

    from circuits.data.sequences import SequenceDataset

MATRIX_KINDS = ("binary", "counts", "transitions")


def user_cluster_matrix(ds: SequenceDataset, item_cluster: Int[np.ndarray, " d_vocab"], n_clusters: int,
                        kind: str = "binary") -> sp.csr_matrix:
    """CSR [n_users, n_clusters] (float64) of the training parts (module docstring); `item_cluster[i]` is the
    cluster of vocabulary index i (−1: in none; such interactions are left out)."""
    import scipy.sparse as sp

    if kind not in MATRIX_KINDS:
        raise ValueError(f"unknown matrix kind {kind!r} ({', '.join(MATRIX_KINDS)})")
    item_cluster = np.asarray(item_cluster, dtype=np.int64)
    user_of = np.repeat(np.arange(ds.n_users, dtype=np.int64), ds.lengths)
    if kind == "transitions":
        ok = ds.train_transition_mask()  # pair (i, i + 1) belongs to the user of item i
        a, b = item_cluster[ds.items[:-1][ok]], item_cluster[ds.items[1:][ok]]
        arrive = (a != b) & (b >= 0)
        X = sp.csr_matrix((np.ones(int(arrive.sum())), (user_of[:-1][ok][arrive], b[arrive])),
                          shape=(ds.n_users, n_clusters))
        X.sum_duplicates()
        return X
    keep = ds.train_mask()
    users = user_of[keep]
    cluster = item_cluster[ds.items[keep]]
    users, cluster = users[cluster >= 0], cluster[cluster >= 0]
    X = sp.csr_matrix((np.ones(len(users)), (users, cluster)), shape=(ds.n_users, n_clusters))
    X.sum_duplicates()  # counts
    if kind == "binary":
        X.data[:] = 1.0
    return X


def cluster_transitions(ds: SequenceDataset, item_cluster: Int[np.ndarray, " d_vocab"], n_clusters: int
                        ) -> sp.csr_matrix:
    """CSR [n_clusters, n_clusters] (int64): T[a, b] = consecutive pairs (x_t, x_{t+1}) inside the training
    parts with x_t in cluster a and x_{t+1} in cluster b (a = b included)."""
    import scipy.sparse as sp

    item_cluster = np.asarray(item_cluster, dtype=np.int64)
    prev, nxt = ds.train_transitions()
    a, b = item_cluster[prev], item_cluster[nxt]
    ok = (a >= 0) & (b >= 0)
    T = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.int64), (a[ok], b[ok])), shape=(n_clusters, n_clusters))
    T.sum_duplicates()
    return T
