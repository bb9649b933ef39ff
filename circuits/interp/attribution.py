"""Exact logit decomposition: the final residual stream split into labelled components.

Given the attention patterns, the model is linear, so at any position

    r_L = E[x_t] + P[t] + Σ_{l,h} head_out^{l,h}        logits = r_L @ W_U

and each component's logits are `component @ W_U`. Components (labels): `embed`, `pos` (absent without
positional embeddings), and one per head `L{l}H{h}`. `path_components` further splits every head of layer
l ≥ 1 by what its values read: `L1H0<-embed`, `L1H0<-pos`, `L1H0<-L0H1`, … (virtual heads), exactly.
Both return `(stack, labels)` with stack [n_components, batch, d_model]; the stack sums to r_L.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.interp.frames import group_sums
from circuits.model import AttnOnlyTransformer
from circuits.scoring.metrics import rank_of_target


def _cache(
    model: AttnOnlyTransformer, items: Tensor, extra: tuple[str, ...] = (), times: Tensor | None = None,
    cache=None,
) -> dict[str, Tensor]:
    """Only the activations a decomposition reads (embeddings, head results, `extra` per-layer hooks); `cache`:
    those of `items` already at hand (`run_with_cache` of the same items and times), read instead."""
    if model.training:
        raise ValueError("decompose a model in eval mode (dropout breaks exactness)")
    if cache is not None:
        if cache["hook_embed"].shape[:2] != items.shape:
            raise ValueError(f"the cache holds activations of shape {tuple(cache['hook_embed'].shape[:2])}, not of "
                             f"the items {tuple(items.shape)}")
        return cache

    def wanted(name: str) -> bool:
        return name in ("hook_embed", "hook_pos_embed") or name.endswith(("attn.hook_result", *extra))

    with torch.no_grad():
        return model.run_with_cache(items, times=times, names_filter=wanted, return_type=None)[1]


def residual_components(
    model: AttnOnlyTransformer, items: Int[Tensor, "batch pos"], pos: int = -1, times: Tensor | None = None,
    cache=None,
) -> tuple[Float[Tensor, "n_components batch d_model"], list[str]]:
    """Direct-path components of the residual stream at position `pos` (default: the last). `times`: the
    items' timestamps, for a model whose attention reads time gaps; `cache`: their activations, if at hand
    (`run_with_cache(items, times=times)`), read instead of a forward pass."""
    cache = _cache(model, items, times=times, cache=cache)
    parts, labels = [cache["hook_embed"][:, pos]], ["embed"]
    if model.W_pos is not None:
        parts.append(cache["hook_pos_embed"][:, pos])
        labels.append("pos")
    for l in range(model.cfg.n_layers):
        result = cache[f"blocks.{l}.attn.hook_result"][:, pos]  # [batch, n_heads, d_model]
        parts.extend(result.unbind(1))
        labels.extend(f"L{l}H{h}" for h in range(model.cfg.n_heads))
    return torch.stack(parts), labels


@torch.no_grad()
def path_components(
    model: AttnOnlyTransformer, items: Int[Tensor, "batch pos"], pos: int = -1, times: Tensor | None = None,
    cache=None,
) -> tuple[Float[Tensor, "n_components batch d_model"], list[str]]:
    """Like `residual_components`, but every head of layer ≥ 1 is split by the source of its values.

    head_out^{l,h}[q] = Σ_k A^{l,h}[q,k] · r_l[k] W_OV^{l,h}, and r_l[k] is itself a sum of components
    (embed, pos, earlier heads, recursively expanded), so each term A · c W_OV is one path.
    """
    cache = _cache(model, items, extra=("attn.hook_pattern",), times=times, cache=cache)
    # every component as a full sequence [batch, pos, d_model], so later layers can read them at every key
    streams: list[Tensor] = [cache["hook_embed"]]
    labels = ["embed"]
    if model.W_pos is not None:
        streams.append(cache["hook_pos_embed"])
        labels.append("pos")
    for l, block in enumerate(model.blocks):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]  # [batch, n_heads, q, k]
        W_OV = block.attn.OV.AB  # [n_heads, d_model, d_model]
        new_streams, new_labels = [], []
        # layer 0 reads only the embeddings: one component per head; later layers: one per source path
        sources = [(sum(streams), None)] if l == 0 else list(zip(streams, labels))
        for h in range(model.cfg.n_heads):
            for src, src_label in sources:
                moved = einops.einsum(src, W_OV[h], "b k d, d e -> b k e")
                new_streams.append(einops.einsum(pattern[:, h], moved, "b q k, b k e -> b q e"))
                new_labels.append(f"L{l}H{h}" if src_label is None else f"L{l}H{h}<-{src_label}")
        streams, labels = streams + new_streams, labels + new_labels
    return torch.stack([s[:, pos] for s in streams]), labels


def component_logits(
    model: AttnOnlyTransformer, stack: Float[Tensor, "n_components batch d_model"]
) -> Float[Tensor, "n_components batch d_vocab"]:
    """Each component's logits, `component @ W_U`; items the model cannot recommend get -inf in every component
    (as in `model.unembed`), so the components still add up to the model's logits."""
    return model.mask_unscorable(einops.einsum(stack, model.W_U.detach(), "c b d, d v -> c b v"))


def target_ranks(logits: Float[Tensor, "... d_vocab"], target: Int[Tensor, " batch"]) -> Int[Tensor, "... batch"]:
    """Rank of the target among all items (1 = best; padding excluded; ties pessimistic, as in metrics)."""
    return rank_of_target(logits[..., 1:], (target - 1).expand(*logits.shape[:-1]))  # column j ↔ item j + 1


def with_groups(
    stack: Float[Tensor, "n_components batch d_model"], labels: list[str], n_layers: int
) -> tuple[Float[Tensor, "n_all batch d_model"], list[str]]:
    """Append grouped views of direct components: `L0` = embed + pos (the direct/bigram path), `L{l+1}` =
    all heads of layer l, and the cumulative sums `L0+L1`, `L0+L1+L2`, … (the last equals the full model)."""
    groups = group_sums(stack, labels, n_layers)
    return torch.cat([stack, torch.stack(list(groups.values()))]), labels + list(groups)
