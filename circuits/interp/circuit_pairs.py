"""Top document pairs of a circuit, blockwise with a running top-k (never an n_items × n_items matrix).

Circuits, as factored products `left @ right` with left [d_vocab, r] and right [r, d_vocab]:
- `L0`        W_E W_U                      current item → predicted next item (the bigram table)
- `OV:LlHh`   W_E W_V W_O W_U              attended item → boosted item
- `QK:LlHh`   W_E W_Q (W_E W_K)ᵀ / √d_head  query item → attended item
Padding (index 0) is never a row or a column.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from circuits.data.sequences import SequenceDataset
from circuits.errors import UserError
from circuits.model import AttnOnlyTransformer

BLOCK_DEFAULT = 1024  # rows per block, at most MAX_BLOCK_ENTRIES // n_items (1024 rows up to 32,768 items)
MAX_BLOCK_ENTRIES = 2**25  # scores held at once (128 MB in fp32): 33 rows at a million items


def circuit_factors(model: AttnOnlyTransformer, circuit: str) -> tuple[Tensor, Tensor]:
    """(left [d_vocab, r], right [r, d_vocab]) with left @ right = the circuit's item × item table."""
    W_E, W_U = model.W_E.detach(), model.W_U.detach()
    if circuit == "L0":
        return W_E, W_U
    m = re.fullmatch(r"(OV|QK):L(\d+)H(\d+)", circuit)
    if not m:
        raise UserError(f"unknown circuit {circuit!r} (L0, OV:L0H1, QK:L0H1, ...)")
    kind, l, h = m.group(1), int(m.group(2)), int(m.group(3))
    if l >= model.cfg.n_layers or h >= model.cfg.n_heads:
        raise UserError(f"{circuit}: the model has {model.cfg.n_layers} layer(s) of {model.cfg.n_heads} heads")
    a = model.blocks[l].attn
    if kind == "OV":
        return W_E @ a.W_V[h].detach(), a.W_O[h].detach() @ W_U
    if model.cfg.attention != "learned":
        raise UserError(f"{circuit}: this model's attention is {model.cfg.attention}; it has no QK circuit")
    return W_E @ a.W_Q[h].detach() / math.sqrt(model.cfg.d_head), (W_E @ a.W_K[h].detach()).T


def top_pairs(
    left: Tensor,
    right: Tensor,
    k: int,
    per_row: bool = False,
    exclude_self: bool = False,
    keep: Tensor | None = None,
    block: int = BLOCK_DEFAULT,
    prune: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest entries of left @ right: globally (k pairs) or per row (k per row). Returns (rows, cols, values).

    `keep` [d_vocab] bool restricts both rows and columns (e.g. items with enough training occurrences).
    Order: value descending, then row, then column ascending; in global mode the k pairs are exactly the first
    k of the whole table in that order (ties at the k-th value included by row, then column).

    Global mode is exact and blockwise, with a running threshold t (the current k-th best value): a block only
    contributes entries ≥ t. With `prune` (the default) it also skips work that cannot reach t, by
    Cauchy–Schwarz, left_i · right_j ≤ ‖left_i‖ ‖right_j‖: rows are visited in descending order of ‖left_i‖ and
    the search stops once ‖left_i‖ · max_j ‖right_j‖ < t; columns are sorted by ‖right_j‖ too, so each block
    multiplies only the columns with ‖left_max‖ ‖right_j‖ ≥ t. The bounds carry a float rounding margin and
    skip only entries strictly below t, so the result is the unpruned one. How much is skipped depends on how
    unequal the norms are (trained embeddings: popular items have large ones; random weights: almost nothing).
    """
    V = left.shape[0]
    keep = torch.ones(V, dtype=torch.bool) if keep is None else keep.clone()
    keep[0] = False
    if per_row:
        return _top_per_row(left, right, k, exclude_self, keep, _block_rows(block, V))
    return _top_global(left, right, k, exclude_self, keep, block, prune)


def _block_rows(block: int, n_cols: int) -> int:
    return max(1, min(block, MAX_BLOCK_ENTRIES // max(n_cols, 1)))


def _ordered(rows: Tensor, cols: Tensor, vals: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((cols.numpy(), rows.numpy(), -vals.numpy()))
    return rows.numpy()[order], cols.numpy()[order], vals.numpy()[order]


def _top_per_row(left, right, k, exclude_self, keep, block):
    V = left.shape[0]
    dropped_cols = (~keep).nonzero()[:, 0]
    out_rows, out_cols, out_vals = [], [], []
    for lo in range(0, V, block):
        hi = min(lo + block, V)
        scores = left[lo:hi] @ right  # [block, V], the only block-sized buffer
        scores[:, dropped_cols] = float("-inf")
        scores[~keep[lo:hi]] = float("-inf")
        if exclude_self:
            scores[torch.arange(hi - lo), torch.arange(lo, hi)] = float("-inf")
        v, c = scores.topk(min(k, V), dim=1)
        r = torch.arange(lo, hi)[:, None].expand_as(c)
        ok = torch.isfinite(v)
        out_rows.append(r[ok]), out_cols.append(c[ok]), out_vals.append(v[ok])
    return _ordered(torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals))


def _norms(x: Tensor, dim: int) -> Tensor:
    """Euclidean norms along `dim` in float64, in chunks (no float64 copy of the whole matrix)."""
    other = 1 - dim
    parts = [torch.linalg.vector_norm(x.narrow(other, lo, min(2**16, x.shape[other] - lo)).double(), dim=dim)
             for lo in range(0, x.shape[other], 2**16)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _entries_at_least_kth(scores: Tensor, best_v: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(rows, cols) of every finite entry of `scores` ≥ t, the k-th largest value of `best_v` (the held values,
    sorted descending) and `scores` together: every entry that can still be among the first k. Ties at t are
    all included (rows are not visited in index order, so a tie may still win by its row)."""
    if len(best_v) == k:  # t is the held k-th value: one comparison pass
        return (scores >= best_v[-1]).nonzero(as_tuple=True)
    rv, rc = scores.topk(min(k, scores.shape[1]), dim=1)  # a block's top k values lie in its rows' top k
    vals = torch.cat([best_v, rv.reshape(-1)])
    vals = vals[torch.isfinite(vals)]
    if len(vals) < k:  # fewer than k entries so far: all of them
        return torch.isfinite(scores).nonzero(as_tuple=True)
    t = vals.topk(k).values[-1]
    # a row's entries ≥ t are in its top k unless its k-th value is ≥ t (then it may hold more ties: scan it)
    dense = rv[:, -1] >= t
    i, jj = ((rv >= t) & ~dense[:, None]).nonzero(as_tuple=True)
    j = rc[i, jj]
    if dense.any():
        d = dense.nonzero()[:, 0]
        di, dj = (scores[d] >= t).nonzero(as_tuple=True)
        i, j = torch.cat([i, d[di]]), torch.cat([j, dj])
    return i, j


def _top_global(left, right, k, exclude_self, keep, block, prune, row_limit: int | None = None):
    """Global mode of `top_pairs`; `row_limit`: visit only that many rows (a benchmark's share of the work)."""
    items = keep.nonzero()[:, 0]  # candidate rows and columns, ascending
    none = torch.zeros(0, dtype=torch.long)
    if k <= 0 or len(items) == 0:
        return _ordered(none, none, torch.zeros(0, dtype=left.dtype))
    rows, cols = items, items
    if prune:
        row_norm, col_norm = _norms(left, 1)[items], _norms(right, 0)[items]
        by_row, by_col = torch.argsort(-row_norm, stable=True), torch.argsort(-col_norm, stable=True)
        rows, row_norm = items[by_row], row_norm[by_row]
        cols, neg_col_norm = items[by_col], -col_norm[by_col]  # ascending, for searchsorted
        # |fl(a·b) − a·b| ≤ γ_r ‖a‖‖b‖ with γ_r ≈ r·eps/2 whatever the summation order; 4× that, plus underflow
        finfo = torch.finfo(left.dtype)
        slack, floor = 1 + 2 * left.shape[1] * finfo.eps, left.shape[1] * finfo.tiny
    right_cols = right[:, cols]  # [r, n], columns in visiting order
    col_pos = torch.full((left.shape[0],), -1, dtype=torch.long)
    col_pos[cols] = torch.arange(len(cols))
    step = _block_rows(block, len(cols))
    best_v, best_r, best_c = torch.zeros(0, dtype=left.dtype), none, none
    for lo in range(0, len(rows) if row_limit is None else min(row_limit, len(rows)), step):
        idx = rows[lo : lo + step]
        m = len(cols)
        if prune and len(best_v) == k:
            t, bound = float(best_v[-1]), float(row_norm[lo]) * slack  # the block's largest row norm
            if bound * -float(neg_col_norm[0]) + floor < t:
                break  # no later row can reach t
            if bound > 0:  # only the columns with ‖left_max‖ ‖right_j‖ ≥ t (the others are below t here)
                m = int(torch.searchsorted(neg_col_norm, torch.tensor(-(t - floor) / bound, dtype=torch.float64),
                                           right=True))
        scores = left[idx] @ right_cols[:, :m]  # [block, m], the only block-sized buffer
        if exclude_self:
            p = col_pos[idx]
            on = ((p >= 0) & (p < m)).nonzero()[:, 0]
            scores[on, p[on]] = float("-inf")
        i, j = _entries_at_least_kth(scores, best_v, k)
        if len(i) == 0:
            continue
        best_v = torch.cat([best_v, scores[i, j]])
        best_r, best_c = torch.cat([best_r, idx[i]]), torch.cat([best_c, cols[j]])
        order = torch.from_numpy(np.lexsort((best_c.numpy(), best_r.numpy(), -best_v.numpy()))[:k])
        best_v, best_r, best_c = best_v[order], best_r[order], best_c[order]
    return _ordered(best_r, best_c, best_v)


def pair_counts(ds: SequenceDataset, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How often b directly followed a in the training parts (from `ds.transition_counts()` when the dataset has
    counted them already; else only the transitions out of the items `a` are counted: a few pairs of a 50M-row
    log need no sort of all its transitions)."""
    if "transitions" in ds._memo:
        keys, counts = ds.transition_counts()
    else:
        source = np.zeros(ds.d_vocab, dtype=bool)
        source[a] = True
        out_of_a = ds.train_transition_mask() & source[ds.items[:-1]]
        keys, counts = np.unique(ds.items[:-1][out_of_a] * ds.d_vocab + ds.items[1:][out_of_a], return_counts=True)
    q = a.astype(np.int64) * ds.d_vocab + b
    pos = np.clip(np.searchsorted(keys, q), 0, max(len(keys) - 1, 0))
    return np.where((len(keys) > 0) & (keys[pos] == q), counts[pos], 0) if len(keys) else np.zeros(len(q), int)


def frequent_items(counts: np.ndarray, min_count: int = 0, max_items: int = 0) -> np.ndarray | None:
    """bool [d_vocab]: the items with at least `min_count` training occurrences and, with `max_items`, only the
    `max_items` most frequent of them (equal counts: the smaller index first); None when that is every item."""
    keep = counts >= min_count
    keep[0] = False
    if max_items and keep.sum() > max_items:
        order = np.lexsort((np.arange(len(counts)), -counts))  # most frequent first
        top = np.zeros_like(keep)
        top[order[keep[order]][:max_items]] = True
        keep = top
    return None if keep[1:].all() else keep


def pair_table(
    model: AttnOnlyTransformer, ds: SequenceDataset, circuit: str, top: int = 50, per_row: bool = False,
    exclude_self: bool = False, min_count: int = 0, max_items: int = 0,
) -> pd.DataFrame:
    """Top pairs with titles, training counts of each item and of the pair (b right after a); only among items
    with at least `min_count` training occurrences and, with `max_items`, the `max_items` most frequent."""
    left, right = circuit_factors(model, circuit)
    counts = ds.train_counts()
    keep = frequent_items(counts, min_count, max_items)
    keep = None if keep is None else torch.from_numpy(keep)
    with torch.no_grad():
        a, b, v = top_pairs(left, right, top, per_row, exclude_self, keep)
    return pd.DataFrame({
        "circuit": circuit, "source_id": ds.item_ids[a], "source_title": ds.titles[a], "target_id": ds.item_ids[b],
        "target_title": ds.titles[b], "value": v, "source_count": counts[a], "target_count": counts[b],
        "pair_count": pair_counts(ds, a, b),
    })


def recovery_precision(table: pd.DataFrame, planted_pairs: list[list[str]]) -> float:
    """Share of the listed (source, target) pairs that are planted pairs (precision@len(table))."""
    planted = {tuple(p) for p in planted_pairs}
    hits = [(s, t) in planted for s, t in zip(table["source_id"], table["target_id"])]
    return float(np.mean(hits)) if hits else 0.0
