"""TransformerLens's `ActivationCache` over an attention-only item model: what `model.run_with_cache` returns.

The cache holds the hooks' tensors as they are (no copy) and adds TransformerLens's conveniences: shorthand
keys (`cache["pattern", 0]`, `cache["resid_pre", 1]`, `cache["embed"]`), `decompose_resid`,
`stack_head_results`, `accumulated_resid`, `get_full_resid_decomposition` and `logit_attrs`, with item
indices in place of tokens (an item's logit direction is its column of `W_U`, so
`logit_attrs(stack, items)[c, b] = stack[c, b] @ W_U[:, items[b]]`).

ActivationCache reads `model.cfg` in TransformerLens's terms, which `ModelConfig` does not have. The cache's
`model` is therefore a view of the model (`CacheModelView`): every attribute is the model's, except `cfg`
(`TransformerLensConfigView`: `ModelConfig`'s fields plus TransformerLens's answers for an attention-only,
LayerNorm-free, bias-free model) and the two helpers TransformerLens asks of every model (`accumulated_bias`,
zero here, and `to_single_token`, which an item model has no tokenizer for). With no LayerNorm,
`apply_ln_to_stack` (and every `apply_ln=True`) returns the stack unchanged, which is exact: the logits are
`r_L @ W_U`.

A 0-layer model has no `hook_resid_post`; its final residual `cache["resid_post", -1]` (which
`accumulated_resid` reads) is `hook_embed + hook_pos_embed`, computed when asked.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.HookedRootModule import HookedRootModule

from circuits.config import ModelConfig


class TransformerLensConfigView:
    """`ModelConfig` as TransformerLens reads it: its own fields (`n_layers`, `n_heads`, `d_model`, `d_vocab`, …)
    plus the TransformerLens fields that `ModelConfig` need not carry, answered for these models."""

    attn_only = True  # no MLP: no hook_mlp_out, no neurons
    normalization_type = None  # no LayerNorm: apply_ln_to_stack is the identity
    final_rms = False
    use_attn_result = True  # blocks.{l}.attn.hook_result, each head's output, is always computed
    d_mlp = None

    def __init__(self, cfg: ModelConfig):
        self._cfg = cfg

    @property
    def positional_embedding_type(self) -> str | None:
        """'standard' (a learned W_pos added to the embedding), or None: no positional embedding."""
        return "standard" if self._cfg.positional else None

    def __getattr__(self, name: str) -> Any:
        if name == "_cfg":  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._cfg, name)

    def __repr__(self) -> str:
        return f"TransformerLensConfigView({self._cfg!r})"


class CacheModelView:
    """The model as the cache sees it (`cache.model`): the model's attributes, `cfg` as a
    `TransformerLensConfigView`, and calling it calls the model."""

    def __init__(self, model: HookedRootModule):  # an AttnOnlyTransformer (circuits.model imports this module)
        self.wrapped = model
        self.cfg = TransformerLensConfigView(model.cfg)

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)

    def __repr__(self) -> str:
        return f"CacheModelView of {type(self.wrapped).__name__}({self.wrapped.cfg!r})"

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Tensor:
        """The biases added to the residual stream before `layer`: none (a bias-free model), zeros [d_model]."""
        weight = next(self.wrapped.parameters())
        return torch.zeros(self.cfg.d_model, dtype=weight.dtype, device=weight.device)

    def to_single_token(self, string: str) -> int:
        raise TypeError(f"an item model has no tokenizer: give item indices (an int or an int tensor), not {string!r}")


class ItemActivationCache(ActivationCache):
    """`ActivationCache` of an `AttnOnlyTransformer` (see the module docstring); `training`: whether the model was
    in training mode when the activations were cached."""

    def __init__(self, cache_dict: dict[str, Tensor], model: HookedRootModule | CacheModelView,
                 has_batch_dim: bool = True, training: bool = False):
        view = model if isinstance(model, CacheModelView) else CacheModelView(model)
        super().__init__(cache_dict, view, has_batch_dim=has_batch_dim)
        self.training = training

    def __getitem__(self, key) -> Tensor:
        if self.model.cfg.n_layers == 0 and isinstance(key, tuple) and tuple(key[:2]) == ("resid_post", -1):
            return self._embedding_resid()
        return super().__getitem__(key)

    def _embedding_resid(self) -> Tensor:
        """r_0 = W_E[x] + W_pos[t], the final residual of a 0-layer model (no hook holds it)."""
        if self.training and self.model.cfg.dropout > 0:
            raise ValueError("the residual stream of a 0-layer model cached in training mode went through dropout, "
                             "which no hook records: cache in eval mode")
        resid = self.cache_dict["hook_embed"]
        if self.model.W_pos is not None:
            resid = resid + self.cache_dict["hook_pos_embed"]
        return resid

    def apply_slice_to_batch_dim(self, batch_slice) -> ItemActivationCache:
        sliced = super().apply_slice_to_batch_dim(batch_slice)
        return ItemActivationCache(sliced.cache_dict, self.model, sliced.has_batch_dim, self.training)
