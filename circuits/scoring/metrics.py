"""Ranking metrics under the two protocols, with explicit seen-item policies.

Tie rule (everywhere): **pessimistic**. rank = 1 + #(items scoring strictly higher) + #(other items
scoring equal), so a constant scorer ranks the target last, never first.

- Full ranking: the target among all n_items (padding never counts).
  Seen-item policy `excluded`: items in the user's history before the target are removed from the
  candidates; if the target itself is one of them (a repeat), it is removed too and counts as a miss.
  Policy `included`: every item is a candidate.
- Sampled: the target among 100 items drawn uniformly, without replacement, from the items the user never
  interacted with (seeded); always labelled "sampled".

HR@k = [rank ≤ k]; NDCG@k = [rank ≤ k] / log2(rank + 1); MRR@k = [rank ≤ k] / rank; averaged over users.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from circuits.data.sequences import EvalSplit

KS = (1, 5, 10, 20)
RANK_SLICE = 2**23  # scores compared at once when ranks are counted (an 8 MB buffer)
MAX_SCORES_PER_BATCH = 2**25  # users × items scored at once (256 MB in float64): bounds a batch at 1M items
POLICIES = ("excluded", "included")
Scorer = Callable[[Tensor, np.ndarray], Tensor]  # (history [B, n_ctx], rows) -> scores [B, d_vocab]


def rank_of_target(scores: Tensor, target: Tensor) -> Tensor:
    """Pessimistic rank of `target` along the last axis of `scores` [..., n_candidates]: int64 [...].

    1 + (candidates scoring higher) + (other candidates tying with it) = candidates scoring ≥ the target."""
    t = scores.gather(-1, target[..., None])
    if scores.device.type != "cpu" or scores.dim() == 0:
        return (scores >= t).sum(-1)
    # on the CPU: numpy counts a bool array 5× faster than torch's sum; the comparison goes into one buffer of at
    # most RANK_SLICE entries, sliced (a new batch-sized one per call, tens of MB at a million items, fragments
    # glibc's heap: 8 GB of growth over an evaluation of 5,000 users)
    flat_scores, flat_t = scores.reshape(-1, scores.shape[-1]), t.reshape(-1, 1)
    out = np.empty(len(flat_scores), dtype=np.int64)
    step = max(1, min(len(flat_scores), RANK_SLICE // max(1, scores.shape[-1])))
    higher = torch.empty(step, scores.shape[-1], dtype=torch.bool)  # one buffer, reused by every slice
    for lo in range(0, len(flat_scores), step):
        part = flat_scores[lo : lo + step]
        buf = higher[: len(part)]
        torch.ge(part, flat_t[lo : lo + step], out=buf)
        out[lo : lo + step] = np.count_nonzero(buf.numpy(), axis=-1)
    return torch.from_numpy(out).reshape(scores.shape[:-1])


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float((hit / np.log2(ranks + 1)).mean())
        out[f"MRR@{k}"] = float((hit / ranks).mean())
    return out


def seen_index(ptr: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """(r, c): every item c of CSR row rows[r], for all r at once (gathered without a per-row loop)."""
    rows = np.asarray(rows, dtype=np.int64)
    lens = ptr[rows + 1] - ptr[rows]
    pos = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens - ptr[rows], lens)
    return torch.from_numpy(np.repeat(np.arange(len(rows)), lens)), torch.from_numpy(np.asarray(items[pos], np.int64))


def mask_rows(scores: Tensor, ptr: np.ndarray, items: np.ndarray, rows: np.ndarray) -> None:
    """scores[r, items of CSR row rows[r]] = -inf, in place."""
    scores[seen_index(ptr, items, rows)] = float("-inf")


def sample_negatives(split: EvalSplit, d_vocab: int, n: int = 100, seed: int = 0) -> np.ndarray:
    """n items per user, uniform without replacement over items the user never touched: int64 [users, n].

    A user with fewer than n untouched items gets all of them, the rest of the row filled with the padding
    item 0 (which scores -inf, so it never outranks the target).
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((len(split), n), dtype=np.int64)
    for r in range(len(split)):
        touched = split.touched_items[split.touched_ptr[r] : split.touched_ptr[r + 1]]
        if d_vocab - 1 - len(touched) <= n:
            pool = np.setdiff1d(np.arange(1, d_vocab), touched)
            out[r, : len(pool)] = pool
            continue
        # rejection sampling is fast when the user touched a small share of items; exact either way
        chosen: list[int] = []
        seen = set(touched.tolist())
        while len(chosen) < n:
            for c in rng.integers(1, d_vocab, size=2 * n).tolist():
                if c not in seen:
                    seen.add(c)
                    chosen.append(c)
                    if len(chosen) == n:
                        break
        out[r] = chosen
    return out


@torch.no_grad()
def split_ranks(
    scorer: Scorer, split: EvalSplit, d_vocab: int, batch_size: int = 512, n_sampled: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per-user target ranks under every protocol/policy: {"full/excluded", "full/included", "sampled"}.

    Users are scored `batch_size` at a time, fewer where `d_vocab` is large (at most MAX_SCORES_PER_BATCH scores
    held at once), so memory stays bounded whatever the number of items."""
    batch_size = max(1, min(batch_size, MAX_SCORES_PER_BATCH // d_vocab))
    negatives = sample_negatives(split, d_vocab, n_sampled, seed) if n_sampled else None
    out = {"full/excluded": [], "full/included": [], "sampled": []}
    for lo in range(0, len(split), batch_size):
        rows = np.arange(lo, min(lo + batch_size, len(split)))
        scores = scorer(torch.from_numpy(split.history[rows]), rows).float().clone()
        scores[:, 0] = float("-inf")  # padding is never a candidate
        target = torch.from_numpy(split.target[rows])
        out["full/included"].append(rank_of_target(scores, target).numpy())
        if negatives is not None:
            cand = torch.cat([target[:, None], torch.from_numpy(negatives[rows])], dim=1)
            sub = scores.gather(1, cand)
            out["sampled"].append(rank_of_target(sub, torch.zeros_like(target)).numpy())
        mask_rows(scores, split.seen_ptr, split.seen_items, rows)
        out["full/excluded"].append(rank_of_target(scores, target).numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def evaluate_split(scorer: Scorer, split: EvalSplit, d_vocab: int, **kw) -> dict[str, dict[str, float]]:
    """{"full/excluded": {"HR@10": …}, "full/included": {…}, "sampled": {…}} for one split."""
    return {k: metrics_from_ranks(r) for k, r in split_ranks(scorer, split, d_vocab, **kw).items()}
