"""DAG logits: the story's "DAG-based logits" added to a next-item scorer.

For the current (last visible) item of cluster c = cluster(last), each candidate j gets

    score'(j) = score(j) + w · A[c, cluster(j)]

with A the discovered cluster DAG (`circuits.causal.discovery`; GOLEM's weight, or 1 for every edge with
`values="binary"`) and w one scalar. Items without a cluster (padding, items the DAG's data did not have) get
0. The term is A's row of the current cluster spread over the vocabulary: [batch, d_vocab] per batch of users,
never a d_vocab × d_vocab table.

The weight w is either
- **learned**: maximum likelihood of the training targets under softmax(logits + w · term) for a trained model
  (the model frozen, w alone fitted by Newton's method on a seeded sample of training windows; the loss is
  convex in w), or
- **chosen on validation**: the w of a grid (0 included) with the best validation NDCG@10, as a checkpoint is;
  what a scorer without a likelihood (the Markov counts) can use.

`weight_ranks` scores each batch of users once and ranks the targets under every w of a grid, so a grid costs
one pass over a split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.causal.dag import DAG_VALUES
from circuits.scoring.metrics import MAX_SCORES_PER_BATCH, Scorer, mask_rows, rank_of_target

if TYPE_CHECKING:
    from circuits.data.sequences import EvalSplit, SequenceDataset
    from circuits.model import AttnOnlyTransformer

# w grid for "chosen on validation": 0 and ± log-spaced from 0.01 to 100 (model logits move by units, Markov
# counts by tens, GOLEM weights are ~0.1–1)
WEIGHT_GRID = (0.0,) + tuple(s * m * 10.0**e for e in range(-2, 2) for m in (1, 3) for s in (1, -1)) + (100.0, -100.0)


class DagTerm:
    """term(last)[b, j] = A[cluster(last[b]), cluster(j)] (module docstring)."""

    def __init__(self, adjacency: Float[np.ndarray, "k k"], item_cluster: Int[np.ndarray, " d_vocab"],
                 values: str = "weight"):
        if values not in DAG_VALUES:
            raise ValueError(f"unknown DAG values {values!r} ({', '.join(DAG_VALUES)})")
        k = len(adjacency)
        table = np.zeros((k + 1, k + 1))  # row and column k: no cluster
        table[:k, :k] = adjacency if values == "weight" else (adjacency != 0)
        self.table = torch.from_numpy(table)
        item_cluster = np.asarray(item_cluster, dtype=np.int64)
        self.cluster = torch.from_numpy(np.where(item_cluster >= 0, item_cluster, k))
        self.values = values

    @property
    def d_vocab(self) -> int:
        return len(self.cluster)

    def __call__(self, last: Int[Tensor, " batch"]) -> Float[Tensor, "batch d_vocab"]:
        return self.table[self.cluster[last.cpu()]][:, self.cluster]


def with_dag(scorer: Scorer, term: DagTerm, weight: float) -> Scorer:
    """`scorer` + weight · term(last visible item) (histories are left-padded: the last column is the last item)."""

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        s = scorer(history, rows)
        return s + weight * term(history[:, -1]).to(s.dtype) if weight else s

    return score


@torch.no_grad()
def weight_ranks(scorer: Scorer, term: DagTerm, split: EvalSplit, weights: tuple[float, ...],
                 policy: str = "excluded", batch_size: int = 512) -> Int[np.ndarray, "n_weights n_users"]:
    """Pessimistic full-ranking target ranks of `split` under `scorer` + w · term for every w of `weights`, under
    the seen-item `policy` (as `circuits.scoring.metrics.split_ranks` ranks them): each batch of users is scored
    once."""
    d_vocab = term.d_vocab
    batch_size = max(1, min(batch_size, MAX_SCORES_PER_BATCH // d_vocab))
    out = np.zeros((len(weights), len(split)), dtype=np.int64)
    for lo in range(0, len(split), batch_size):
        rows = np.arange(lo, min(lo + batch_size, len(split)))
        history = torch.from_numpy(split.history[rows])
        base = scorer(history, rows).double()
        dag = term(history[:, -1])
        target = torch.from_numpy(split.target[rows])
        for i, w in enumerate(weights):
            scores = (base + w * dag if w else base).float()
            scores[:, 0] = float("-inf")  # padding is never a candidate
            if policy == "excluded":
                mask_rows(scores, split.seen_ptr, split.seen_items, rows)
            out[i, rows] = rank_of_target(scores, target).numpy()
    return out


@torch.no_grad()
def fit_dag_weight(model: AttnOnlyTransformer, ds: SequenceDataset, term: DagTerm, windows: int = 512,
                   seed: int = 0, iterations: int = 20, batch_size: int = 32, tol: float = 1e-5) -> dict:
    """The learned w (module docstring): Newton's method on the mean cross-entropy of the training targets of
    `windows` seeded training windows (`SequenceDataset.train_window_rows`, 'all'), the model frozen in eval mode.
    With z = logits + w·t and p = softmax(z): dL/dw = E_p[t] − t[target], d²L/dw² = Var_p[t] ≥ 0 (mean over
    targets). Returns {"weight", "loss_at_0", "loss", "iterations", "targets"}."""
    was_training = model.training
    model.eval()
    device = model.unseen.device
    rows, backs, lengths = ds.train_window_rows(model.cfg.n_ctx, "all")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), size=min(windows, len(rows)), replace=False))
    batches = [pick[lo : lo + batch_size] for lo in range(0, len(pick), batch_size)]

    chunk = max(1, MAX_SCORES_PER_BATCH // term.d_vocab)  # targets unembedded at once (memory bounded)

    def sweep(w: float) -> tuple[float, float, float, int]:
        loss = grad = hess = 0.0
        n = 0
        for idx in batches:
            width = int(lengths[idx].max())
            x, y, t = (torch.from_numpy(a) for a in ds.train_batch(rows[idx], width, backs[idx]))
            real = y != 0
            resid = model.residual(x.to(device), t.to(device) if model.cfg.uses_time else None)[real.to(device)]
            current, target = x[real], y[real]
            for lo in range(0, len(target), chunk):
                logits = model.unembed(resid[lo : lo + chunk]).cpu().double()
                logits[:, 0] = float("-inf")  # padding is never a candidate
                dag = term(current[lo : lo + chunk])
                tgt = target[lo : lo + chunk, None]
                logp = (logits + w * dag if w else logits).log_softmax(-1)
                p = logp.exp()  # 0 where a logit is −inf
                mean = (p * dag).sum(-1)
                loss -= float(logp.gather(1, tgt).sum())
                grad += float((mean - dag.gather(1, tgt)[:, 0]).sum())
                hess += float(((p * dag**2).sum(-1) - mean**2).clamp_min(0).sum())
            n += len(target)
        return loss / n, grad / n, hess / n, n

    loss0, grad, hess, n = sweep(0.0)
    w, loss, steps = 0.0, loss0, 0
    while steps < iterations and hess > 0:
        steps += 1
        step = grad / hess
        new = w - step
        new_loss, new_grad, new_hess, _ = sweep(new)
        while new_loss > loss + 1e-12 and abs(step) > tol:  # Newton overshoots far from the optimum: halve
            step /= 2
            new = w - step
            new_loss, new_grad, new_hess, _ = sweep(new)
        w, loss, grad, hess = new, new_loss, new_grad, new_hess
        if abs(step) <= tol * max(1.0, abs(w)):
            break
    model.train(was_training)
    return {"weight": w, "loss_at_0": loss0, "loss": loss, "iterations": steps, "targets": n}

