"""`decompose_sequence` without torch: the single-sequence view from a run's weights in numpy
(`circuits.model_numpy.NumpyModel`), for `python -m circuits.decompose --seq-id` from the shell, which would
otherwise spend 3 s importing torch and TransformerLens for a few small products. Direct components only
(`--paths` takes the torch path). The same tables as `circuits.interp.decomposition.decompose_sequence`, equal to
float rounding (tested for every attention kind, item side and depth)."""

from __future__ import annotations

import numpy as np

from circuits.interp.frames import component_frame, group_sums, query_view, sequence_view, source_frame, top_indices
from circuits.model_numpy import NumpyModel


def residual_components_numpy(model: NumpyModel, cache: dict[str, np.ndarray], pos: int = -1
                              ) -> tuple[np.ndarray, list[str]]:
    """`residual_components` of one sequence: stack [n_components, d_model] at position `pos`, and the labels."""
    parts, labels = [cache["hook_embed"][pos]], ["embed"]
    if "hook_pos_embed" in cache:
        parts.append(cache["hook_pos_embed"][pos])
        labels.append("pos")
    for l in range(model.cfg.n_layers):
        parts.extend(cache[f"blocks.{l}.attn.hook_result"][pos])  # one [d_model] row per head
        labels.extend(f"L{l}H{h}" for h in range(model.cfg.n_heads))
    return np.stack(parts), labels


def with_groups_numpy(stack: np.ndarray, labels: list[str], n_layers: int) -> tuple[np.ndarray, list[str]]:
    """`circuits.interp.attribution.with_groups` in numpy (the same sums, in the same order)."""
    groups = group_sums(stack, labels, n_layers)
    return np.concatenate([stack, np.stack(list(groups.values()))]), labels + list(groups)


def decompose_sequence_numpy(model: NumpyModel, ds, user_id: str, split: str = "test", pos: int = -1,
                             top: int = 10, same_cosine: float = 0.9) -> dict:
    """What `decompose_sequence(run, ds, user_id, split, pos, top)` returns, computed in numpy."""
    start, end, q, target, seq = query_view(ds, user_id, split, model.cfg.n_ctx, pos)
    items = np.asarray(ds.items[start : start + q + 1], dtype=np.int64)
    times = np.asarray(ds.timestamps[start : start + q + 1], dtype=np.float64)
    cache = model.run_with_cache(items, times)
    stack, labels = with_groups_numpy(*residual_components_numpy(model, cache), model.cfg.n_layers)
    W_U = model.W_U  # [d_model, d_vocab]; a product for text sides, formed once
    logits = model.mask_unscorable(stack @ W_U)  # [n_components, d_vocab]
    ranks = (logits[:, 1:] >= logits[:, target : target + 1]).sum(-1)  # pessimistic, padding excluded
    top_items = top_indices(logits[:, 1:], min(top, ds.n_items)) + 1  # padding left out; ties: lower index
    components = component_frame(labels, logits[:, target], ranks.astype(np.int64), top_items, ds.titles)
    V = model.near_vectors(items)
    norms = np.linalg.norm(V, axis=-1)
    cos = (V @ V[q]) / np.maximum(norms * norms[q], 1e-8)
    u_t = W_U[:, target]
    heads = []
    for l in range(model.cfg.n_layers):
        resid = cache[f"blocks.{l}.hook_resid_pre"]
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]
        W_V, W_O = model.weights[f"blocks.{l}.attn.W_V"], model.weights[f"blocks.{l}.attn.W_O"]
        for h in range(model.cfg.n_heads):
            heads.append((f"L{l}H{h}", pattern[h, q], (resid @ W_V[h] @ W_O[h]) @ u_t))
    sources = source_frame(heads, items, q, ds.titles, times, cos >= same_cosine)
    return sequence_view(user_id, split, q, target, ds, seq, components, sources)
