"""Baselines scored through the same evaluator as the models.

Scores break their own ties by training popularity (always < 1, so it never overrides the main signal);
what remains tied is ranked pessimistically by the evaluator.

- `most-popular`: training-part occurrence count.
- `repeat`: items of the visible history, most recent first (the last item highest); then popularity.
- `markov`: first-order transition counts (previous item → next item) over the training parts, from the
  last visible item; then popularity. Stored sparse (sorted pair keys), never as an n_items² table.
- `cooccurrence` (not in the default set): order-free "bag of history", item-kNN style: Σ over the distinct
  visible history items h of cos(h, i) = n(h, i) / √(n(h) n(i)), where n(h, i) counts the training users
  whose training part holds both, n(h) those holding h; then popularity. Computed as X.T (X bag) with the
  sparse user × item incidence X, never an item × item table.

With the items' text embeddings (`text` [d_vocab, d_text], row 0 = padding), the story's baselines:
- `emb-mean`: the user vector is the mean of the last k visible history items' embeddings; score = cosine
  with each item's embedding (the story's "emb-mean"; k = `EMB_MEAN_K` unless given).
- `text-knn`: cosine of each item's embedding with the latest item's (the nearest documents to the last one).
No popularity tie-break for these (cosines tie only for identical texts); ties are ranked pessimistically.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from circuits.data.sequences import SequenceDataset
from circuits.errors import UserError
from circuits.scoring.metrics import Scorer

BASELINES = ("most-popular", "repeat", "markov")
TEXT_BASELINES = ("emb-mean", "text-knn")
EMB_MEAN_K = 10  # the story's baseline averaged the recent documents; 10 of the last is a common window


def _popularity(ds: SequenceDataset) -> Tensor:
    counts = torch.from_numpy(ds.train_counts()).double()
    return counts / (counts.max() + 1)  # in [0, 1)


def most_popular(ds: SequenceDataset) -> Scorer:
    pop = _popularity(ds)
    return lambda history, rows: pop.expand(len(history), -1)


def repeat(ds: SequenceDataset) -> Scorer:
    pop = _popularity(ds)

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        out = pop.expand(len(history), -1).clone()
        n_ctx = history.shape[1]
        recency = 1.0 + torch.arange(1, n_ctx + 1, dtype=torch.float64) / n_ctx  # later = higher, all > 1
        # scatter in time order so a repeated item keeps its most recent (largest) score
        out.scatter_(1, history, recency.expand(len(history), -1))
        return out

    return score


def markov(ds: SequenceDataset) -> Scorer:
    keys, counts = ds.transition_counts()
    row_ptr = np.searchsorted(keys, np.arange(ds.d_vocab + 1) * ds.d_vocab)
    pop = _popularity(ds)

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        out = pop.expand(len(history), -1).clone()
        last = history[:, -1].numpy()
        for r, a in enumerate(last):
            lo, hi = row_ptr[a], row_ptr[a + 1]
            out[r, torch.from_numpy(keys[lo:hi] % ds.d_vocab)] += torch.from_numpy(counts[lo:hi]).double()
        return out

    return score


def cooccurrence(ds: SequenceDataset, normalise: bool = True) -> Scorer:
    """`normalise=False`: raw counts Σ_h n(h, i) (≥ 1 exactly when i co-occurs with some history item)."""
    train = ds.train_mask()
    users, items = np.repeat(np.arange(ds.n_users), ds.lengths)[train], ds.items[train]
    pairs = np.unique(users.astype(np.int64) * ds.d_vocab + items)  # each (user, item) once
    X = torch.sparse_coo_tensor(np.stack([pairs // ds.d_vocab, pairs % ds.d_vocab]), torch.ones(len(pairs),
                                dtype=torch.float64), (ds.n_users, ds.d_vocab), check_invariants=True).coalesce()
    Xt = X.t().coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is the same, 3× as fast
        warnings.simplefilter("ignore", UserWarning)
        X, Xt = X.to_sparse_csr(), Xt.to_sparse_csr()
    inv_sqrt = torch.from_numpy(np.bincount(pairs % ds.d_vocab, minlength=ds.d_vocab).astype(np.float64))
    inv_sqrt = torch.where(inv_sqrt > 0, inv_sqrt.rsqrt(), torch.zeros_like(inv_sqrt))  # 1/√n(i), 0 if unseen
    if not normalise:
        inv_sqrt = torch.ones_like(inv_sqrt)
    pop = _popularity(ds)

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        bag = torch.zeros(len(history), ds.d_vocab, dtype=torch.float64)
        bag.scatter_(1, history, 1.0)
        bag[:, 0] = 0.0
        shared = X @ (bag * inv_sqrt).T  # [users, batch]: Σ 1/√n(h) over shared history items
        return (Xt @ shared).T * inv_sqrt + pop  # [batch, d_vocab]

    return score


def _unit_rows(text: Tensor) -> Tensor:
    """Unit-norm rows; the padding row is zero whatever `text` holds there (it must add nothing to a mean)."""
    E = torch.nn.functional.normalize(torch.as_tensor(text, dtype=torch.float32), dim=-1)
    E[0] = 0.0
    return E


def emb_mean(text: Tensor, k: int = EMB_MEAN_K) -> Scorer:
    """Cosine between each item's embedding and the mean of the last `k` visible history items' embeddings."""
    if k < 1:
        raise UserError(f"emb-mean needs k ≥ 1, got {k}")
    E = _unit_rows(text)

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        recent = history[:, -k:]
        n = (recent != 0).sum(1, keepdim=True).clamp_min(1)
        user = E[recent].sum(1) / n  # padding rows are zero, so this is the mean over real items
        return torch.nn.functional.normalize(user, dim=-1) @ E.T

    return score


def text_knn(text: Tensor) -> Scorer:
    """Cosine between each item's embedding and the latest visible item's."""
    E = _unit_rows(text)
    return lambda history, rows: E[history[:, -1]] @ E.T


def baseline_scorer(name: str, ds: SequenceDataset, text: Tensor | None = None, k: int = EMB_MEAN_K) -> Scorer:
    """The scorer of baseline `name`; the text baselines need the items' embeddings `text` [d_vocab, d_text]."""
    if name in TEXT_BASELINES:
        if text is None:
            raise UserError(f"the {name} baseline needs the items' text embeddings")
        return emb_mean(text, k) if name == "emb-mean" else text_knn(text)
    return {"most-popular": most_popular, "repeat": repeat, "markov": markov, "cooccurrence": cooccurrence}[name](ds)
