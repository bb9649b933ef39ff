"""One sequence taken apart: its visible history, the exact logit components with the target's rank under
each, and each head's attention sources. The data behind `python -m circuits.decompose --seq-id` and the
report's decomposition section.
"""

from __future__ import annotations

import torch

from circuits.interp.attribution import (
    component_logits,
    path_components,
    residual_components,
    target_ranks,
    with_groups,
)
from circuits.interp.frames import component_frame, query_view, sequence_view, top_indices, visible_window
from circuits.interp.sources import attention_sources

__all__ = ["decompose_sequence", "sequence_cache", "visible_window"]


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
    start, end, q, target, seq = query_view(ds, user_id, split, run.model.cfg.n_ctx, pos)
    times = ds.timestamps[start:end]
    items = torch.tensor(ds.items[start : start + q + 1])[None]  # a copy: the dataset's arrays are read-only maps
    if cache is None:
        cache = sequence_cache(run.model, ds, user_id, split, q)
    decompose = path_components if paths else residual_components
    stack, labels = with_groups(*decompose(run.model, items, times=torch.tensor(times[: q + 1])[None], cache=cache),
                                run.model.cfg.n_layers)
    logits = component_logits(run.model, stack)[:, 0]  # [n_comp, d_vocab]
    ranks = target_ranks(logits[:, None], torch.tensor([target]))[:, 0]
    top_items = top_indices(logits[:, 1:].numpy(), min(top, ds.n_items)) + 1  # padding left out; ties: lower index
    components = component_frame(labels, logits[:, target].numpy(), ranks.numpy(), top_items, ds.titles)
    sources = attention_sources(run.model, items[0], target, ds.titles, times[: q + 1], cache=cache)
    return sequence_view(user_id, split, q, target, ds, seq, components, sources)
