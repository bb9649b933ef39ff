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

BLOCK_DEFAULT = 1024  # rows per block: 1024 × 100k items × 4 bytes = 0.4 GB of scores at a time


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest entries of left @ right: globally (k pairs) or per row (k per row). Returns (rows, cols, values).

    `keep` [d_vocab] bool restricts both rows and columns (e.g. items with enough training occurrences).
    Order: value descending, then row, then column ascending. Global mode keeps a running threshold (the
    current k-th best value): once k pairs are held, a block only contributes entries strictly above it, so
    after the first block the top-k work is one comparison pass (exact: a later, larger-row entry that only
    ties the threshold would lose the row-ascending tie anyway).
    """
    V = left.shape[0]
    keep = torch.ones(V, dtype=torch.bool) if keep is None else keep.clone()
    keep[0] = False
    dropped_cols = (~keep).nonzero()[:, 0]
    best_v, best_i = torch.empty(0), torch.empty(0, dtype=torch.long)
    out_rows, out_cols, out_vals = [], [], []
    for lo in range(0, V, block):
        hi = min(lo + block, V)
        scores = left[lo:hi] @ right  # [block, V], the only block-sized buffer
        scores[:, dropped_cols] = float("-inf")
        scores[~keep[lo:hi]] = float("-inf")
        if exclude_self:
            scores[torch.arange(hi - lo), torch.arange(lo, hi)] = float("-inf")
        if per_row:
            v, c = scores.topk(min(k, V), dim=1)
            r = torch.arange(lo, hi)[:, None].expand_as(c)
            ok = torch.isfinite(v)
            out_rows.append(r[ok]), out_cols.append(c[ok]), out_vals.append(v[ok])
            continue
        if len(best_v) < k:  # two stages (exact: a block's top k lie in its rows' top k); no block-sized copy
            rv, rc = scores.topk(min(k, V), dim=1)
            v, sel = rv.reshape(-1).topk(min(k, rv.numel()))
            flat = (sel // rv.shape[1]) * V + rc.reshape(-1)[sel]
        else:
            above = (scores > best_v[-1]).reshape(-1).nonzero()[:, 0]
            flat, v = above, scores.reshape(-1)[above]
        best_v = torch.cat([best_v, v])
        best_i = torch.cat([best_i, flat + lo * V])
        best_v, sel = best_v.topk(min(k, len(best_v)))  # sorted descending: best_v[-1] is the threshold
        best_i = best_i[sel]
    if per_row:
        rows, cols, vals = torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)
    else:
        ok = torch.isfinite(best_v)
        rows, cols, vals = best_i[ok] // V, best_i[ok] % V, best_v[ok]
    order = np.lexsort((cols.numpy(), rows.numpy(), -vals.numpy()))
    return rows.numpy()[order], cols.numpy()[order], vals.numpy()[order]


def pair_counts(ds: SequenceDataset, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How often b directly followed a in the training parts."""
    keys, counts = ds.transition_counts()
    q = a.astype(np.int64) * ds.d_vocab + b
    pos = np.clip(np.searchsorted(keys, q), 0, max(len(keys) - 1, 0))
    return np.where((len(keys) > 0) & (keys[pos] == q), counts[pos], 0) if len(keys) else np.zeros(len(q), int)


def pair_table(
    model: AttnOnlyTransformer, ds: SequenceDataset, circuit: str, top: int = 50, per_row: bool = False,
    exclude_self: bool = False, min_count: int = 0,
) -> pd.DataFrame:
    """Top pairs with titles, training counts of each item and of the pair (b right after a)."""
    left, right = circuit_factors(model, circuit)
    counts = ds.train_counts()
    keep = torch.from_numpy(counts >= min_count) if min_count else None
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
