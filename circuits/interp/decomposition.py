"""One sequence taken apart: its visible history, the exact logit components with the target's rank under
each, and each head's attention sources. The data behind `python -m circuits.decompose --seq-id` and the
report's decomposition section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from circuits.errors import UserError
from circuits.interp.attribution import (
    component_logits,
    path_components,
    residual_components,
    target_ranks,
    with_groups,
)
from circuits.interp.sources import attention_sources, format_gap, same_item_shares


def visible_window(ds, user_id: str, split: str, n_ctx: int) -> tuple[int, int]:
    """(start, end): `ds.items[start:end]` is the history the model sees before the split's target, which is
    `ds.items[end]` (test: the user's last item; valid: the one before)."""
    u = ds.user_index(user_id)
    lo, hi = ds.offsets[u], ds.offsets[u + 1]
    if hi - lo < 3:
        raise UserError(f"sequence {user_id!r} has {hi - lo} items; evaluation needs at least 3")
    end = hi - (2 if split == "valid" else 1)
    return max(lo, end - n_ctx), end


def sequence_cache(model, ds, user_id: str, split: str = "test", query: int | None = None):
    """`run_with_cache` of the user's visible history before the split's target (up to position `query`), every
    activation: what the decomposition, the attention sources and the attention figures of the sequence read."""
    start, end = visible_window(ds, user_id, split, model.cfg.n_ctx)
    stop = end if query is None else start + query + 1
    items = torch.tensor(ds.items[start:stop])[None]  # a copy: the dataset's arrays are read-only memory maps
    with torch.no_grad():
        return model.run_with_cache(items, times=torch.tensor(ds.timestamps[start:stop])[None], return_type=None)[1]


def decompose_sequence(
    run, ds, user_id: str, split: str = "test", pos: int = -1, top: int = 10, paths: bool = False, cache=None
) -> dict:
    """Everything the single-sequence view shows, as plain data (DataFrames). One forward pass (`sequence_cache`)
    for the components and the sources; `cache`: that pass's activations, if at hand (`sequence_cache` of the
    same user, split and query position)."""
    start, end = visible_window(ds, user_id, split, run.model.cfg.n_ctx)
    window = ds.items[start:end]
    if not -len(window) <= pos < len(window):
        raise UserError(f"--pos {pos} is outside the visible history of {len(window)} items")
    q = pos % len(window)
    target = int(ds.items[start + q + 1]) if start + q + 1 < end else int(ds.items[end])
    times = ds.timestamps[start:end]
    seq = pd.DataFrame({"position": np.arange(len(window)), "item_id": ds.item_ids[window], "title": ds.titles[window],
                        "gap_to_previous": [""] + [format_gap(g) for g in np.diff(times)]})
    items = torch.tensor(window[: q + 1])[None]  # a copy: the dataset's arrays are read-only memory maps
    if cache is None:
        cache = sequence_cache(run.model, ds, user_id, split, q)
    decompose = path_components if paths else residual_components
    stack, labels = with_groups(*decompose(run.model, items, times=torch.tensor(times[: q + 1])[None], cache=cache),
                                run.model.cfg.n_layers)
    logits = component_logits(run.model, stack)[:, 0]  # [n_comp, d_vocab]
    ranks = target_ranks(logits[:, None], torch.tensor([target]))[:, 0]
    scored = logits.clone()
    scored[:, 0] = float("-inf")
    top_items = scored.topk(min(top, ds.n_items), dim=-1).indices
    components = pd.DataFrame({
        "component": labels, "target_logit": logits[:, target].numpy(), "rank": ranks.numpy(),
        "top_items": [[ds.titles[i] for i in row.tolist()] for row in top_items],
    })
    sources = attention_sources(run.model, items[0], target, ds.titles, times[: q + 1], cache=cache)
    return {
        "user_id": user_id, "split": split, "query_position": q, "target_item": ds.item_ids[target],
        "target_title": ds.titles[target], "n_items": ds.n_items, "sequence": seq, "components": components,
        "sources": sources, "same_item_attention": same_item_shares(sources) if len(sources) else pd.DataFrame(),
    }
