"""Baselines scored through the same evaluator as the models.

Scores break their own ties by training popularity (always < 1, so it never overrides the main signal);
what remains tied is ranked pessimistically by the evaluator.

- `most-popular`: training-part occurrence count.
- `repeat`: items of the visible history, most recent first (the last item highest); then popularity.
- `markov`: first-order transition counts (previous item → next item) over the training parts, from the
  last visible item; then popularity. Stored sparse (sorted pair keys), never as an n_items² table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from circuits.data.sequences import SequenceDataset
from circuits.metrics import Scorer

BASELINES = ("most-popular", "repeat", "markov")


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


def baseline_scorer(name: str, ds: SequenceDataset) -> Scorer:
    return {"most-popular": most_popular, "repeat": repeat, "markov": markov}[name](ds)
