"""The tables of one sequence's view, from plain arrays: shared by the torch path (`circuits.interp.decomposition`,
`circuits.interp.sources`) and the torch-free one (`circuits.interp.decomposition_numpy`). No torch here."""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuits.errors import UserError


def format_gap(seconds: float) -> str:
    """Seconds → '2.1 d', '3.0 h', '12.5 min', '40 s' ('' for a missing gap)."""
    if not np.isfinite(seconds):
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def visible_window(ds, user_id: str, split: str, n_ctx: int) -> tuple[int, int]:
    """(start, end): `ds.items[start:end]` is the history the model sees before the split's target, which is
    `ds.items[end]` (test: the user's last item; valid: the one before)."""
    u = ds.user_index(user_id)
    lo, hi = ds.offsets[u], ds.offsets[u + 1]
    if hi - lo < 3:
        raise UserError(f"sequence {user_id!r} has {hi - lo} items; evaluation needs at least 3")
    end = hi - (2 if split == "valid" else 1)
    return max(lo, end - n_ctx), end


def query_view(ds, user_id: str, split: str, n_ctx: int, pos: int) -> tuple[int, int, int, int, pd.DataFrame]:
    """(start, end, q, target, sequence table) of the view at query position `pos` of the visible history: q ≥ 0,
    the target the next item (at the last position, the split's target)."""
    start, end = visible_window(ds, user_id, split, n_ctx)
    window = ds.items[start:end]
    if not -len(window) <= pos < len(window):
        raise UserError(f"--pos {pos} is outside the visible history of {len(window)} items")
    q = pos % len(window)
    target = int(ds.items[start + q + 1]) if start + q + 1 < end else int(ds.items[end])
    times = ds.timestamps[start:end]
    seq = pd.DataFrame({"position": np.arange(len(window)), "item_id": ds.item_ids[window], "title": ds.titles[window],
                        "gap_to_previous": [""] + [format_gap(g) for g in np.diff(times)]})
    return start, end, q, target, seq


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores of each row [rows, k]: best first, ties by lower index (the order of a full
    stable sort by descending score; a partition per row, then a sort of k)."""
    k = min(k, scores.shape[-1])
    out = np.empty((len(scores), k), dtype=np.int64)
    for i, row in enumerate(scores):
        kth = np.partition(row, len(row) - k)[len(row) - k]  # the k-th largest value
        above = np.flatnonzero(row > kth)
        idx = np.concatenate([above, np.flatnonzero(row == kth)[: k - len(above)]])
        out[i] = idx[np.lexsort((idx, -row[idx]))]
    return out


def component_frame(labels: list[str], target_logit: np.ndarray, rank: np.ndarray, top_items: np.ndarray,
                    titles) -> pd.DataFrame:
    """One row per component: its target logit, the target's rank, the titles of its top items (`top_items`
    [n_components, top] item indices)."""
    return pd.DataFrame({"component": labels, "target_logit": target_logit, "rank": rank,
                         "top_items": [[titles[i] for i in row.tolist()] for row in top_items]})


def source_frame(heads: list[tuple[str, np.ndarray, np.ndarray]], items: np.ndarray, q: int, titles,
                 timestamps, near: np.ndarray) -> pd.DataFrame:
    """Rows (head, key_pos, item, title, gap, weight, ov_logit, contribution, same_item, near_same_item) of the
    query `q`'s keys 0…q, from `heads` = [(label, weights [≥ q + 1], ov_logits [≥ q + 1])] and `near` (bool
    [≥ q + 1]: the key's vector is near-identical to the query item's)."""
    rows = []
    for label, weights, ov_logits in heads:
        for k in range(q + 1):
            w, o = float(weights[k]), float(ov_logits[k])
            rows.append({
                "head": label, "key_pos": k, "item": int(items[k]),
                "title": None if titles is None else titles[int(items[k])],
                "gap": None if timestamps is None else float(timestamps[q] - timestamps[k]),
                "weight": w, "ov_logit": o, "contribution": w * o,
                "same_item": bool(items[k] == items[q]), "near_same_item": bool(near[k]),
            })
    return pd.DataFrame(rows)


def same_item_shares(sources: pd.DataFrame) -> pd.DataFrame:
    """Per head: share of the query's attention on the same item, and on near-identical items."""
    g = sources.assign(same=sources.weight * sources.same_item, near=sources.weight * sources.near_same_item)
    return g.groupby("head", sort=False)[["same", "near"]].sum().rename(
        columns={"same": "same_item_share", "near": "near_same_share"})


def group_sums(stack, labels: list[str], n_layers: int) -> dict:
    """The grouped views of direct components (numpy arrays or torch tensors, [n_components, ...]): `L0` = embed +
    pos (the direct/bigram path), `L{l+1}` = all heads of layer l, and the cumulative sums `L0+L1`, `L0+L1+L2`, …
    (the last equals the full model)."""
    def total(names):
        return stack[[labels.index(n) for n in labels if n in names]].sum(0)

    groups = {"L0": total({"embed", "pos"})}
    for l in range(n_layers):
        # a layer's heads: direct labels `L{l}H{h}`, or their path terms `L{l}H{h}<-…`, which partition them
        groups[f"L{l + 1}"] = total({n for n in labels if n.startswith(f"L{l}H")})
    running, name = groups["L0"], "L0"
    for l in range(n_layers):
        running, name = running + groups[f"L{l + 1}"], f"{name}+L{l + 1}"
        groups[name] = running
    return groups


def sequence_view(user_id: str, split: str, q: int, target: int, ds, seq: pd.DataFrame, components: pd.DataFrame,
                  sources: pd.DataFrame) -> dict:
    """The single-sequence view as plain data (what `decompose_sequence` returns)."""
    return {
        "user_id": user_id, "split": split, "query_position": q, "target_item": ds.item_ids[target],
        "target_title": ds.titles[target], "n_items": ds.n_items, "sequence": seq, "components": components,
        "sources": sources, "same_item_attention": same_item_shares(sources) if len(sources) else pd.DataFrame(),
    }
