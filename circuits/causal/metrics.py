"""How well a recovered DAG matches a known one: SHD, TPR, FDR (the definitions of NOTEARS' `count_accuracy`
and gcastle's `MetricsDAG`, for DAG estimates).

With `est` and `true` boolean [d, d] (edge i → j at [i, j]):
- TP = estimated edges present in `true` with the same direction; `reversed` = estimated i → j where `true`
  has j → i; FP = estimated edges whose pair is not adjacent in `true` at all;
- TPR = TP / |true edges|; FDR = (reversed + FP) / |estimated edges| (a reversed edge is a false discovery);
- SHD = extra pairs + missing pairs + reversed edges (a reversal costs 1, not 2).

Written here, not taken from gcastle's `MetricsDAG`: that class divides by zero on an empty estimate (NaN
precision and F1 with a warning), asserts on an empty truth (its g-score), rounds to 4 decimals and loops over
d² entries in Python. `tests/test_causal.py` checks these numbers against it on random graphs.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool


def dag_metrics(est: Bool[np.ndarray, "d d"], true: Bool[np.ndarray, "d d"]) -> dict:
    """SHD, TPR, FDR and the counts behind them (module docstring). Self-loops are ignored; `est` must not hold
    both i → j and j → i (a DAG never does)."""
    est = np.asarray(est) != 0
    true = np.asarray(true) != 0
    if est.shape != true.shape or est.ndim != 2 or est.shape[0] != est.shape[1]:
        raise ValueError(f"dag_metrics: need two square matrices of one shape, got {est.shape} and {true.shape}")
    est, true = est & ~np.eye(len(est), dtype=bool), true & ~np.eye(len(true), dtype=bool)
    if (est & est.T).any():
        raise ValueError("dag_metrics: the estimate has an edge in both directions (not a DAG)")
    true_skeleton = true | true.T
    tp = int((est & true).sum())
    reversed_ = int((est & true.T & ~true).sum())
    fp = int((est & ~true_skeleton).sum())
    n_est, n_true = int(est.sum()), int(true.sum())
    est_pairs, true_pairs = np.triu(est | est.T, 1), np.triu(true_skeleton, 1)
    extra = int((est_pairs & ~true_pairs).sum())
    missing = int((true_pairs & ~est_pairs).sum())
    return {
        "shd": extra + missing + reversed_,
        "tpr": tp / max(n_true, 1),
        "fdr": (reversed_ + fp) / max(n_est, 1),
        "true_edges": n_true,
        "found_edges": n_est,
        "correct": tp,
        "reversed": reversed_,
        "false": fp,
        "missing_pairs": missing,
        "extra_pairs": extra,
    }
