"""Directed graphs as adjacency matrices: `A[i, j] != 0` is the edge i → j (GOLEM's convention: X ≈ X B, so
column j of B holds the weights of j's parents).

`is_dag` and `topological_order` peel off nodes without parents (Kahn's algorithm, one numpy step per layer
of the order); `threshold_to_dag` is GOLEM's post-processing (the paper's and gcastle's `postprocess`).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float

DAG_VALUES = ("weight", "binary")  # how DAG logits read A: GOLEM's weights, or 1 for every edge


def topological_order(A: Float[np.ndarray, "d d"]) -> np.ndarray | None:
    """Nodes in an order where every edge i → j has i before j (ties by node index, layer by layer); None if
    `A` (non-zero entries = edges; the diagonal counts as self-loops) has a cycle."""
    edges = np.asarray(A) != 0
    d = edges.shape[0]
    in_degree = edges.sum(0)
    done = np.zeros(d, dtype=bool)
    order = []
    while True:
        ready = np.flatnonzero(~done & (in_degree == 0))
        if len(ready) == 0:
            break
        order.append(ready)
        done[ready] = True
        in_degree = in_degree - edges[ready].sum(0)
    if not done.all():
        return None
    return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)


def is_dag(A: Float[np.ndarray, "d d"]) -> bool:
    """Has the graph of `A`'s non-zero entries no directed cycle (self-loops included)?"""
    return topological_order(A) is not None


def threshold_to_dag(B: Float[np.ndarray, "d d"], threshold: float = 0.3
                     ) -> tuple[Float[np.ndarray, "d d"], float]:
    """GOLEM's post-processing: zero every |B| ≤ `threshold`, then, if a cycle is left, remove the weakest
    edges until none is. Returns (the weighted DAG, the cut that the acyclicity step needed: edges with
    |B| ≤ cut are gone; 0 when the thresholded graph already was a DAG).

    gcastle's `threshold_till_dag` removes edges one at a time in order of |weight| and checks after each;
    a subgraph of a DAG is a DAG, so "acyclic after removing every edge with |B| ≤ t" is monotone in t and a
    binary search over the sorted weights finds the same cut with O(log edges) checks. (With exactly tied
    weights this removes every tied edge at the cut, gcastle possibly only some of them.)"""
    W = np.where(np.abs(B) > threshold, B, 0.0)
    np.fill_diagonal(W, 0.0)
    if is_dag(W):
        return W, 0.0
    cuts = np.unique(np.abs(W[W != 0]))  # ascending; cutting at the largest leaves no edge: a DAG
    lo, hi = 0, len(cuts) - 1  # the answer is cuts[k] for the smallest k whose cut leaves a DAG
    while lo < hi:
        mid = (lo + hi) // 2
        if is_dag(np.abs(W) > cuts[mid]):
            hi = mid
        else:
            lo = mid + 1
    cut = float(cuts[lo])
    return np.where(np.abs(W) > cut, W, 0.0), cut


def random_dag(d: int, edge_prob: float, rng: np.random.Generator) -> Bool[np.ndarray, "d d"]:
    """An Erdős–Rényi DAG: a random order of the d nodes, and each pair (earlier → later) an edge with
    probability `edge_prob`."""
    upper = np.triu(rng.random((d, d)) < edge_prob, k=1)
    perm = rng.permutation(d)
    dag = np.zeros((d, d), dtype=bool)
    dag[np.ix_(perm, perm)] = upper  # node perm[a] → perm[b] for a < b
    return dag
