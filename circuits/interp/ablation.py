"""Ablate heads through hooks and measure what the model loses.

`zero`: the head's output (hook_result) is set to 0. `mean`: to its mean over the real positions of the
given histories (removes the information, keeps the average offset). Hooks are always scoped.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from circuits.data.sequences import EvalSplit
from circuits.model import AttnOnlyTransformer
from circuits.scoring.metrics import metrics_from_ranks


@torch.no_grad()
def mean_head_results(
    model: AttnOnlyTransformer, histories: torch.Tensor, times: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Mean output [d_model] of every head over the real positions of `histories` (`times`: their timestamps,
    for a model whose attention reads time gaps)."""
    _, cache = model.run_with_cache(histories, times=times, return_type=None)
    real = (histories != 0).float()[..., None]
    out = {}
    for l in range(model.cfg.n_layers):
        result = cache[f"blocks.{l}.attn.hook_result"]  # [b, p, h, d]
        mean = (result * real[..., None]).sum((0, 1)) / real.sum()
        for h in range(model.cfg.n_heads):
            out[f"L{l}H{h}"] = mean[h]
    return out


@contextmanager
def ablated(model: AttnOnlyTransformer, head: str, value: torch.Tensor | None = None):
    """Within the block, head `L{l}H{h}` outputs `value` (default zeros) at every position."""
    with ablated_heads(model, {head: value}):
        yield model


@contextmanager
def ablated_heads(model: AttnOnlyTransformer, replacements: dict[str, torch.Tensor | None], position: int | None = None):
    """Several heads at once: each `L{l}H{h}` outputs its replacement (None = zeros) at every position, or only
    at `position` (e.g. -1: the last, where the user vector is read; on left-padded or stripped batches every
    row's last position is its query)."""
    by_layer: dict[int, dict[int, torch.Tensor | None]] = {}
    for head, value in replacements.items():
        l, h = (int(x) for x in head[1:].split("H"))
        by_layer.setdefault(l, {})[h] = value
    where = slice(None) if position is None else position

    def hook_for(heads):
        def hook(result, hook):  # [batch, pos, n_heads, d_model]
            for h, value in heads.items():
                result[:, where, h] = 0.0 if value is None else value
            return result
        return hook

    with model.hooks(fwd_hooks=[(f"blocks.{l}.attn.hook_result", hook_for(heads)) for l, heads in by_layer.items()]):
        yield model


@contextmanager
def ablated_layers(model: AttnOnlyTransformer, replacements: dict[int, torch.Tensor | None], position: int | None = None):
    """Whole attention layers: layer l's output (the sum of its heads, `blocks.{l}.hook_attn_out`) becomes its
    replacement (None = zeros) at every position, or only at `position`."""
    where = slice(None) if position is None else position

    def hook_for(value):
        def hook(attn_out, hook):  # [batch, pos, d_model]
            attn_out[:, where] = 0.0 if value is None else value
            return attn_out
        return hook

    with model.hooks(fwd_hooks=[(f"blocks.{l}.hook_attn_out", hook_for(v)) for l, v in replacements.items()]):
        yield model


def ablation_table(
    model: AttnOnlyTransformer, split: EvalSplit, d_vocab: int, policy: str = "excluded", modes=("zero", "mean")
) -> pd.DataFrame:
    """Per head and mode: NDCG@10 before/after and the mean change of log2(target rank) on `split`.

    A head of the last layer ablated at every position changes the user vector at the last position only, so
    those ablations are replayed there, all in the intact model's pass (`last_position.model_ranks`); a head of
    an earlier layer needs a pass of its own under the ablation hook (its later layers read it everywhere)."""
    from circuits.interp.last_position import model_ranks

    protocol = f"full/{policy}"
    means = (mean_head_results(model, torch.from_numpy(split.history[:512]), torch.from_numpy(split.history_times[:512]))
             if "mean" in modes else {})
    last = f"L{model.cfg.n_layers - 1}H"
    replaced = {(head, mode): means.get(head) if mode == "mean" else None for head in model.head_labels()
                for mode in modes}
    ranks = model_ranks(model, split, {key: {"heads": {key[0]: value}} for key, value in replaced.items()
                                       if key[0].startswith(last)})
    base = ranks["intact"][protocol]
    rows = []
    for (head, mode), value in replaced.items():
        if head.startswith(last):
            r = ranks[head, mode][protocol]
        else:
            with ablated(model, head, value):
                r = model_ranks(model, split)["intact"][protocol]
        rows.append({"head": head, "mode": mode, "NDCG@10": metrics_from_ranks(base)["NDCG@10"],
                     "ablated_NDCG@10": metrics_from_ranks(r)["NDCG@10"],
                     "mean_log2_rank_change": float(np.mean(np.log2(r) - np.log2(base)))})
    out = pd.DataFrame(rows)
    out["NDCG@10_change"] = out["ablated_NDCG@10"] - out["NDCG@10"]
    return out
