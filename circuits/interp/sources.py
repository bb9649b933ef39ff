"""Each head's contribution to the target's logit, split by source position (QK × OV).

For head (l, h) at query position q:  head_logit[t] = Σ_k A[q,k] · (r_l[k] W_OV U)[t]
QK decides the weights A[q,k]; OV turns the residual at each source k into per-item logits. Each row is
one source position; its `contribution` = weight × ov_logit, and they sum to the head's component logit.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from circuits.interp.frames import format_gap, same_item_shares, source_frame
from circuits.model import AttnOnlyTransformer, distance_buckets, strip_left_padding

__all__ = ["attention_sources", "format_gap", "near_vectors", "same_item_shares", "same_item_table"]


def attention_sources(
    model: AttnOnlyTransformer,
    items: Int[Tensor, " pos"],
    target: int,
    titles: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    query: int = -1,
    same_cosine: float = 0.9,
    cache=None,
) -> pd.DataFrame:
    """One unpadded sequence → rows (head, key_pos, item, title, gap, weight, ov_logit, contribution,
    same_item, near_same_item). `timestamps` (aligned with `items`) gives `gap` = query time − source time;
    `near_same_item`: the source's vector has cosine ≥ `same_cosine` with the query item's (`near_vectors`:
    text embeddings where the model has them, else W_E). A model whose attention reads time gaps needs
    `timestamps`. `cache`: the sequence's activations, if at hand (`run_with_cache` of `items[None]`)."""
    if model.training:
        raise ValueError("use a model in eval mode")
    x = items[None]
    n = items.shape[0]
    q = query % n
    times = None if timestamps is None else torch.tensor(np.asarray(timestamps, dtype=np.float64))[None]  # a copy
    with torch.no_grad():
        if cache is None:
            _, cache = model.run_with_cache(x, times=times, return_type=None)
        V = near_vectors(model)
        cos = torch.nn.functional.cosine_similarity(V[items], V[items[q]][None], dim=-1)
        u_t = model.W_U[:, target]
    heads = []
    for l, block in enumerate(model.blocks):
        resid = cache[f"blocks.{l}.hook_resid_pre"][0]  # [pos, d_model]
        pattern = cache[f"blocks.{l}.attn.hook_pattern"][0]  # [n_heads, q, k]
        for h in range(model.cfg.n_heads):
            with torch.no_grad():
                ov_logit = (resid @ block.attn.W_V[h] @ block.attn.W_O[h]) @ u_t  # [pos]
            heads.append((f"L{l}H{h}", pattern[h, q].detach().numpy(), ov_logit.detach().numpy()))
    return source_frame(heads, items.numpy(), q, titles, timestamps, (cos >= same_cosine).numpy())


def near_vectors(model) -> Tensor:
    """The item vectors whose cosine says "near-identical": a text or hybrid model's text embeddings E_text
    (the documents' own similarity, the story's question), else the learned W_E. [d_vocab, d]"""
    return (model.E_text if model.cfg.uses_text else model.W_E).detach()


@torch.no_grad()
def same_item_table(
    model, histories: np.ndarray, near_cosine: float = 0.9, batch: int = 256, times: np.ndarray | None = None,
    vectors: Tensor | None = None, groups: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per head, the attention mass on keys holding the query's own item (itself and earlier occurrences:
    `same`), on near-identical items (cosine ≥ `near_cosine` of `vectors` [d_vocab, d], default `near_vectors`:
    `near`, which includes `same`) and, with `groups` (int [d_vocab], e.g. planted duplicate stories; -1 =
    none), on other items of the query item's group (`twin`), averaged over every real query position of the
    left-padded `histories` (and `twin_given`: the twin share averaged over the `twin_queries` queries that have
    a twin among their visible keys), under three patterns: `actual`, `positional` (the head's scores from positions
    alone: the W_pos terms of QK, or static attention's distance scores; absent for static attention over time
    gaps only) and `uniform`. The batched form of `same_item_shares`. `times`: the histories' timestamps, needed
    by a model whose attention reads time gaps. Histories are taken in batches of `batch` of similar length
    (`last_position.length_batches`: little padding)."""
    from circuits.interp.last_position import length_batches

    cfg = model.cfg
    E = torch.nn.functional.normalize(near_vectors(model) if vectors is None else torch.as_tensor(vectors), dim=-1)
    group = None if groups is None else torch.as_tensor(groups, dtype=torch.long)
    sums: dict[tuple[str, str], np.ndarray] = {}
    n_queries = n_twin_queries = 0
    for rows in length_batches(histories, batch):
        x, t = torch.from_numpy(histories[rows]), None
        if times is None:
            x = strip_left_padding(x)
        else:
            x, t = strip_left_padding(x, torch.from_numpy(times[rows]))
        real = x != 0
        allowed = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool)) & real[:, None, :]  # [b, q, k]
        same = (x[:, :, None] == x[:, None, :]) & allowed
        near = (E[x] @ E[x].transpose(1, 2) >= near_cosine) & allowed
        twin = has_twin = None
        if group is not None:
            g = group[x]
            twin = (g[:, :, None] == g[:, None, :]) & (g[:, :, None] >= 0) & ~same & allowed
            has_twin = twin.any(-1) & real  # [b, q]
        uniform = allowed / allowed.sum(-1, keepdim=True).clamp_min(1)
        # the sums below run over the real queries' rows: each mask's rows gathered once, each pattern's once per
        # pattern (the same products, added in the same order as (p * m)[real].sum())
        masks = [m[real] for m in ((same, near) if twin is None else (same, near, twin))]
        uniform_shares = None  # the same for every head
        _, cache = model.run_with_cache(x, times=t, return_type=None)
        pos = cache["hook_pos_embed"] if model.W_pos is not None else None
        distance = distance_buckets(x.shape[1], cfg.distance_buckets) if "distance" in cfg.static_over else None
        for l, block in enumerate(model.blocks):
            actual = cache[f"blocks.{l}.attn.hook_pattern"]  # [b, h, q, k]
            for h in range(cfg.n_heads):
                patterns = {"actual": actual[:, h], "uniform": uniform}
                scores = None  # the head's scores from positions alone, where it has such a part
                if cfg.attention == "uniform":
                    patterns["positional"] = actual[:, h]
                elif cfg.attention == "static" and cfg.distance_buckets:  # the distance scores, not the time ones
                    scores = block.attn.W_dist[h][distance].expand(len(x), -1, -1)
                elif cfg.attention == "learned" and (pos is not None or distance is not None):
                    if pos is not None:
                        scores = (pos @ block.attn.W_Q[h]) @ (pos @ block.attn.W_K[h]).transpose(1, 2)
                        scores = scores / math.sqrt(cfg.d_head)
                    if distance is not None:  # a distance bias is positional too (a time bias is not)
                        bias = block.attn.W_dist[h][distance]
                        scores = bias.expand(len(x), -1, -1) if scores is None else scores + bias
                if scores is not None:
                    patterns["positional"] = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
                for name, p in patterns.items():
                    if name == "uniform" and uniform_shares is not None:
                        shares = uniform_shares
                    else:
                        query_rows = p[real]
                        shares = [float((query_rows * m).sum()) for m in masks]
                        if twin is not None:  # the twin share of the queries that have a twin to attend to
                            shares.append(float((p * twin).sum(-1)[has_twin].sum()))
                        if name == "uniform":
                            uniform_shares = shares
                    key = (f"L{l}H{h}", name)
                    sums[key] = sums.get(key, 0) + np.array(shares)
        n_queries += int(real.sum())
        n_twin_queries += 0 if twin is None else int(has_twin.sum())
    columns = ("same", "near") if group is None else ("same", "near", "twin")
    rows = []
    for (head, name), v in sums.items():
        row = {"head": head, "pattern": name, **{c: v[i] / n_queries for i, c in enumerate(columns)}}
        if group is not None:
            row.update(twin_given=v[3] / n_twin_queries if n_twin_queries else float("nan"),
                       twin_queries=n_twin_queries)
        rows.append(row)
    return pd.DataFrame(rows)
