"""The user vector's forward pass: what every analysis of the next-item logits reads, and nothing else.

The logits that rank a history's next item read the final residual stream at its last position only. Every
layer but the last must still run at every position (the later layers' keys and values read its output
there), but the last layer's other queries are never read: here it runs at the last query alone, from the
model's own weights (`_attend_last`, the last row of `Attention.forward`: the same sums, in another order, so
equal to float rounding). The lower layers are the model's own forward, stopped by a hook where the last
layer's input is complete. Batches of histories of similar length (`length_batches`) hold little padding, so
the work is about Σ_users length² rather than users × n_ctx².

`LastPosition` keeps, for one batch, each layer's input at every position with its keys and values, and every
head's output at the last position. From it `final_residual` replays the last position with some heads or
layers replaced there (the translation experiment's ablations: everything before the last position is
untouched, so only its query is recomputed, layer by layer), at the cost of one query per layer instead of a
forward pass per ablation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import einops
import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.interp.threads import one_thread
from circuits.model import PAD, AttnOnlyTransformer, strip_left_padding, time_buckets


def length_batches(history: np.ndarray, max_rows: int) -> Iterator[np.ndarray]:
    """Row indices of left-padded `history` [n, n_ctx] in batches of at most `max_rows` rows of similar length:
    the rows sorted by their number of real items (stable), cut into consecutive batches, rows ascending within
    each. Stripping a batch's padding columns then leaves little padding: the attention work is about
    Σ length² instead of users × n_ctx². (Not one batch per length: many small batches cost more than the
    padding they save, most of all where another process holds a core and every parallel operation waits.)"""
    lengths = np.count_nonzero(history != PAD, axis=1)
    order = np.argsort(lengths, kind="stable")
    for lo in range(0, len(order), max_rows):
        yield np.sort(order[lo : lo + max_rows])


class _Stop(Exception):
    """Raised by the hook on the last layer's input: the rest of the forward pass is not needed."""


@dataclass
class LastPosition:
    """One batch through the model up to the last position of its last layer.

    `resid_pre[l]` [batch, pos, d_model] is layer l's input at every position, `keys[l]` / `values[l]`
    [batch, pos, n_heads, d_head] its keys and values (keys: learned attention only), `results` [batch,
    n_layers, n_heads, d_model] every head's output at the last position, `embed` and `pos` [batch, d_model] the
    direct path there (`pos` None without positional embeddings), `final` [batch, d_model] the final residual
    stream there (the user vector: logits = final @ W_U). `real` [batch, pos] marks the real items."""

    model: AttnOnlyTransformer
    real: Bool[Tensor, "batch pos"]
    times: Tensor | None
    embed: Float[Tensor, "batch d_model"]
    pos: Float[Tensor, "batch d_model"] | None
    resid_pre: list[Tensor]
    keys: list[Tensor | None]
    values: list[Tensor]
    results: Float[Tensor, "batch n_layers n_heads d_model"]
    final: Float[Tensor, "batch d_model"]
    _static: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.real)

    def components(self) -> tuple[Float[Tensor, "n_components batch d_model"], list[str]]:
        """`residual_components` at the last position: embed, pos, every head (`L{l}H{h}`)."""
        parts, labels = [self.embed], ["embed"]
        if self.pos is not None:
            parts.append(self.pos)
            labels.append("pos")
        for l in range(self.model.cfg.n_layers):
            parts.extend(self.results[:, l].unbind(1))
            labels.extend(f"L{l}H{h}" for h in range(self.model.cfg.n_heads))
        return torch.stack(parts), labels

    def outputs(self) -> dict[str, Tensor]:
        """What `analyses.translation.last_position_outputs` reads at the last position: every head's output
        (`L{l}H{h}`), every layer's (`L{l+1}`, the sum of its heads), the direct path (`direct`) and the input of
        the last layer (`into_last_layer`)."""
        out = {"direct": self.embed + self.pos if self.pos is not None else self.embed}
        if self.model.cfg.n_layers:
            out["into_last_layer"] = self.resid_pre[-1][:, -1]
        for l in range(self.model.cfg.n_layers):
            out[f"L{l + 1}"] = self.results[:, l].sum(1)
            for h in range(self.model.cfg.n_heads):
                out[f"L{l}H{h}"] = self.results[:, l, h]
        return out

    def static_last(self, layer: int) -> Tensor | None:
        """The static part of layer `layer`'s scores at the last query [batch or 1, n_heads, pos] (None if none)."""
        if not self.model.cfg.has_static_scores:
            return None
        if layer not in self._static:
            n = self.real.shape[1]
            cfg = self.model.cfg
            bucket = time_buckets(self.times, cfg.time_buckets, last_query=True) if cfg.uses_time else None
            scores = self.model.blocks[layer].attn.static_scores(n, bucket, last_query=True)
            self._static[layer] = scores[:, :, -1].detach()
        return self._static[layer]


def _attend_last(
    model: AttnOnlyTransformer, layer: int, q: Tensor | None, k: Tensor | None, v: Tensor, real: Tensor,
    static: Tensor | None,
) -> Float[Tensor, "batch n_heads d_model"]:
    """Each head's output at the last query of layer `layer`, from that query `q` [batch, n_heads, d_head]
    and the keys `k` and values `v` [batch, pos, n_heads, d_head] of every position (`Attention.forward`'s last
    row: scores = q·k/√d_head (learned) + the static scores; padded keys masked; softmax; Σ pattern · v; W_O).
    The last position of a left-padded history is a real item, so its pattern is never zeroed."""
    attn = model.blocks[layer].attn
    b, n = v.shape[0], v.shape[1]
    if model.cfg.attention == "learned":
        scores = einops.einsum(q, k, "b h e, b k h e -> b h k") / math.sqrt(model.cfg.d_head)
    else:
        scores = v.new_zeros(b, model.cfg.n_heads, n)
    if static is not None:
        scores = scores + static
    pattern = scores.masked_fill(~real[:, None, :], float("-inf")).softmax(dim=-1)
    z = einops.einsum(pattern, v, "b h k, b k h e -> b h e")
    return einops.einsum(z, attn.W_O, "b h e, h e d -> b h d")


def _project(model: AttnOnlyTransformer, layer: int, resid: Tensor) -> tuple[Tensor | None, Tensor]:
    """Keys (learned attention; else None) and values of layer `layer` from `resid` [..., d_model]."""
    attn = model.blocks[layer].attn
    k = einops.einsum(resid, attn.W_K, "... d, h d e -> ... h e") if model.cfg.attention == "learned" else None
    return k, einops.einsum(resid, attn.W_V, "... d, h d e -> ... h e")


def _query(model: AttnOnlyTransformer, layer: int, resid_last: Tensor) -> Tensor | None:
    if model.cfg.attention != "learned":
        return None
    return einops.einsum(resid_last, model.blocks[layer].attn.W_Q, "b d, h d e -> b h e")


@torch.no_grad()
def layer_inputs(
    model: AttnOnlyTransformer, items: Int[Tensor, "batch pos"], times: Tensor | None = None
) -> tuple[Tensor | None, list[Tensor]]:
    """(`hook_pos_embed` [batch, pos, d_model], None without positional embeddings; every layer's input
    `blocks.{l}.hook_resid_pre` [batch, pos, d_model]) of left-padded `items`, from the model's own forward
    stopped at the last layer's input: the last layer's attention, which none of them needs, is not run."""
    names = (["hook_pos_embed"] if model.W_pos is not None else []) + \
        [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
    got: dict[str, Tensor] = {}

    def keep(x, hook):
        got[hook.name] = x
        if hook.name == names[-1]:
            raise _Stop

    try:
        with model.hooks(fwd_hooks=[(name, keep) for name in names]):
            model(items, times, return_type=None)
    except _Stop:
        pass
    return got.get("hook_pos_embed"), [got[f"blocks.{l}.hook_resid_pre"] for l in range(model.cfg.n_layers)]


@torch.no_grad()
def last_position_pass(
    model: AttnOnlyTransformer, items: Int[Tensor, "batch pos"], times: Tensor | None = None
) -> LastPosition:
    """Run left-padded `items` (`times`: their timestamps, for attention over time gaps) through the model's own
    forward up to the last layer's input (hooks active on the model, e.g. `ablated`, apply there), then the last
    layer at the last query only (`_attend_last`; a hook on the last layer does not fire)."""
    if model.training:
        raise ValueError("use a model in eval mode (dropout)")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    got: dict[str, Tensor] = {}

    def keep(x, hook):
        got[hook.name] = x

    def stop(x, hook):
        got[hook.name] = x
        raise _Stop

    hooks = [("hook_embed", keep)] + ([("hook_pos_embed", keep)] if model.W_pos is not None else [])
    for l in range(L - 1):
        hooks += [(f"blocks.{l}.hook_resid_pre", keep), (f"blocks.{l}.attn.hook_v", keep),
                  (f"blocks.{l}.attn.hook_result", keep)]
        if model.cfg.attention == "learned":
            hooks.append((f"blocks.{l}.attn.hook_k", keep))
    if L:
        hooks.append((f"blocks.{L - 1}.hook_resid_pre", stop))
    try:
        with model.hooks(fwd_hooks=hooks):
            model(items, times, return_type=None)
    except _Stop:
        pass
    embed = got["hook_embed"][:, -1]
    pos = got["hook_pos_embed"][:, -1] if model.W_pos is not None else None
    real = items != PAD
    resid_pre = [got[f"blocks.{l}.hook_resid_pre"] for l in range(L)]
    keys: list[Tensor | None] = [got.get(f"blocks.{l}.attn.hook_k") for l in range(L - 1)]
    values = [got[f"blocks.{l}.attn.hook_v"] for l in range(L - 1)]
    results = [got[f"blocks.{l}.attn.hook_result"][:, -1] for l in range(L - 1)]
    lp = LastPosition(model, real, times, embed, pos, resid_pre, keys, values,
                      torch.zeros(len(items), 0, H, model.cfg.d_model), embed if pos is None else embed + pos)
    if L:
        top = resid_pre[-1]
        k, v = _project(model, L - 1, top)
        keys.append(k)
        values.append(v)
        results.append(_attend_last(model, L - 1, _query(model, L - 1, top[:, -1]), k, v, real, lp.static_last(L - 1)))
        lp.results = torch.stack(results, dim=1)
        lp.final = top[:, -1] + lp.results[:, -1].sum(1)
    return lp


@torch.no_grad()
def final_residual(
    lp: LastPosition, heads: dict[str, Tensor | None] | None = None, layers: dict[int, Tensor | None] | None = None
) -> Float[Tensor, "batch d_model"]:
    """The final residual at the last position with, there only, heads `L{l}H{h}` replaced (None = zero) and
    whole layers' outputs replaced (`layers`: layer → vector or None), as `ablated_heads(..., position=-1)` and
    `ablated_layers(..., position=-1)` do in a full forward. The earlier positions are untouched, so each layer
    from the first replaced one up is recomputed at the last query only, its keys and values changed at the last
    position alone."""
    model = lp.model
    by_layer: dict[int, dict[int, Tensor | None]] = {}
    for head, value in (heads or {}).items():
        l, h = (int(x) for x in head[1:].split("H"))
        by_layer.setdefault(l, {})[h] = value
    layers = layers or {}
    touched = sorted(set(by_layer) | set(layers))
    if not touched:
        return lp.final
    first = touched[0]
    x = lp.resid_pre[first][:, -1]
    for l in range(first, model.cfg.n_layers):
        if l == first:
            out = lp.results[:, l]  # its input is intact
        else:
            k_last, v_last = _project(model, l, x)
            k = None if k_last is None else torch.cat([lp.keys[l][:, :-1], k_last[:, None]], dim=1)
            v = torch.cat([lp.values[l][:, :-1], v_last[:, None]], dim=1)
            out = _attend_last(model, l, _query(model, l, x), k, v, lp.real, lp.static_last(l))
        if l in by_layer:
            out = out.clone()
            for h, value in by_layer[l].items():
                out[:, h] = 0.0 if value is None else value
        attn_out = out.sum(1)
        if l in layers:
            attn_out = torch.zeros_like(attn_out) if layers[l] is None else layers[l].expand_as(attn_out)
        x = x + attn_out
    return x


def iter_last_positions(
    model: AttnOnlyTransformer, history: np.ndarray, times: np.ndarray, max_rows: int
) -> Iterator[tuple[np.ndarray, LastPosition]]:
    """(rows, `last_position_pass` of those rows) over left-padded `history` and its `times`, in
    `length_batches`, each batch's all-padding columns stripped."""
    device = model.unseen.device
    for rows in length_batches(history, max_rows):
        x, t = strip_left_padding(torch.from_numpy(history[rows]), torch.from_numpy(times[rows]))
        yield rows, last_position_pass(model, x.to(device), t.to(device))


def user_vector_ranks(
    model: AttnOnlyTransformer, final: Float[Tensor, "... batch d_model"], split, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The target's full-ranking rank under both seen-item policies (`full/included`, `full/excluded`), [...,
    batch], for the `rows` of `split` whose user vectors are `final` (leading axes: variants of the same users):
    `split_ranks` of `model_scorer` from the user vectors, the same scores (`model.unembed`: unscorable items
    -inf; padding -inf) and the same pessimistic ranks."""
    from circuits.scoring.metrics import rank_of_target, seen_index

    lead = final.shape[:-2]
    # [variants · batch, d_vocab], on the CPU (where the ranks are counted), a copy: masked in place below
    scores = model.unembed(final.reshape(-1, final.shape[-1])).float().to("cpu", copy=True)
    scores[:, 0] = float("-inf")  # padding is never a candidate
    copies = int(np.prod(lead, dtype=np.int64))
    target = torch.from_numpy(np.tile(split.target[rows], copies))
    included = rank_of_target(scores, target).numpy()
    r, c = seen_index(split.seen_ptr, split.seen_items, rows)
    scores.view(copies, len(rows), -1)[:, r, c] = float("-inf")
    excluded = rank_of_target(scores, target).numpy()
    return {"full/excluded": excluded.reshape(*lead, len(rows)), "full/included": included.reshape(*lead, len(rows))}


def ranking_rows(d_vocab: int) -> int:
    """Users per batch of a full ranking: at most MAX_SCORES_PER_BATCH scores at once (as `split_ranks`)."""
    from circuits.scoring.metrics import MAX_SCORES_PER_BATCH

    return max(1, min(256, MAX_SCORES_PER_BATCH // d_vocab))


def read_split(model: AttnOnlyTransformer, split, readers: list) -> None:
    """One pass over the users of `split` (`iter_last_positions`, in batches of at most the smallest
    `reader.max_rows`), handing each batch to every reader: `reader.read(rows, lp)`. The report's sections read
    the test split's forward pass this way, once for all of them."""
    if not len(split):
        return
    rows_per_batch = min(r.max_rows for r in readers)
    for rows, lp in iter_last_positions(model, split.history, split.history_times, rows_per_batch):
        for reader in readers:
            reader.read(rows, lp)


class RankReader:
    """Collects `user_vector_ranks` of every user, in split order, for the intact model (`"intact"`) and for each
    named variant (`final_residual`'s keyword arguments: heads or layers replaced at the last position):
    `ranks[name][protocol]` int64 [n_users]."""

    def __init__(self, model: AttnOnlyTransformer, split, variants: dict | None = None):
        self.model, self.split = model, split
        self.variants = {"intact": {}, **(variants or {})}
        self.max_rows = ranking_rows(model.cfg.d_vocab)
        self.ranks = {name: {p: np.empty(len(split), dtype=np.int64) for p in ("full/excluded", "full/included")}
                      for name in self.variants}

    def read(self, rows: np.ndarray, lp: LastPosition) -> None:
        from circuits.scoring.metrics import MAX_SCORES_PER_BATCH

        with one_thread():  # a replay is one query per layer: small operations (see circuits.interp.threads)
            finals = torch.stack([final_residual(lp, **replaced) for replaced in self.variants.values()])
        names = list(self.variants)
        per = max(1, MAX_SCORES_PER_BATCH // (len(rows) * self.model.cfg.d_vocab))  # variants scored at once
        for lo in range(0, len(names), per):
            for protocol, r in user_vector_ranks(self.model, finals[lo : lo + per], self.split, rows).items():
                for name, ranks in zip(names[lo : lo + per], r):
                    self.ranks[name][protocol][rows] = ranks


class OutputReader:
    """Collects `LastPosition.outputs` of every user, in split order: `outputs[name]` [n_users, d_model]."""

    max_rows = 256

    def __init__(self, n_users: int):
        self.n_users, self.outputs = n_users, {}

    def read(self, rows: np.ndarray, lp: LastPosition) -> None:
        for name, v in lp.outputs().items():
            if name not in self.outputs:
                self.outputs[name] = v.new_empty(self.n_users, *v.shape[1:])
            self.outputs[name][rows] = v


def model_ranks(model: AttnOnlyTransformer, split, variants: dict | None = None) -> dict:
    """Every user's full-ranking ranks of `split` (`user_vector_ranks`, in split order) for the intact model
    (`"intact"`) and for each named variant (`RankReader`): one pass over the users for all of them. Equals
    `split_ranks(model_scorer(model, split), split, d_vocab, n_sampled=0)` (under the variant's `ablated_heads` /
    `ablated_layers(..., position=-1)` hooks) to float rounding."""
    reader = RankReader(model, split, variants)
    read_split(model, split, [reader])
    return reader.ranks
