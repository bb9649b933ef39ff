"""Attention-only transformer over item sequences, with TransformerLens names and hooks.

Row-vector convention throughout (`x @ W`). No LayerNorm, no biases:

    r_0     = W_E[x_t] + W_pos[t]
    r_{l+1} = r_l + Σ_h A^{l,h} (r_l W_V^{l,h}) W_O^{l,h}
    logits  = r_L @ W_U

so the logits are a sum of linear terms given the attention patterns. `n_layers=0` is the same class with
no blocks: logits = (W_E[x_t] + W_pos[t]) @ W_U, the bigram model.

Items enter and leave through id or text sides (`cfg.embed_side`, `cfg.unembed_side`). With frozen text
embeddings `E_text` [d_vocab, d_text] (a buffer; row 0, padding, is zero):

    id:     W_E = W_E (learned)          W_U = W_U (learned)
    text:   W_E = E_text W_in            W_U = W_out E_textᵀ
    hybrid: W_E = E_text W_in + W_E_id   W_U = W_out E_textᵀ + W_U_id     (id parts start at zero)

`model.W_E` [d_vocab, d_model] and `model.W_U` [d_model, d_vocab] are always the effective matrices (products
for the text sides: linear in d_vocab, never d_vocab²), so every analysis reads them unchanged;
`W_E_text`/`W_U_text` give the text factors as FactoredMatrix.

Items without training occurrences (`unseen`, a buffer set by training and saved with the weights: documents
of a catalogue pool or held out for cold start) take no part in training (never a negative: see the loss) and
have no learned id vector. So a hybrid's id parts count as zero for them (they are scored by their text, as a
served model scores a new document), and an id output cannot recommend them: `unembed` gives them -inf (as
`component_logits` does for every component, so the decomposition still adds up). Attention is `learned` (QK), `static`
(a learned score per head and bucket of query–key distance and/or time gap; no QK), both summed (learned with
`static_bias`: r_q W_QK r_kᵀ/√d_head + W_time[h, bucket(t_q − t_k)], the bias entering the scores like the
positional QK terms, so the logits stay linear given the patterns) or `uniform`; attention over time gaps reads
the interactions' timestamps, `model(items, times)`.

Padding contract: item index 0 is padding and sequences are **left**-padded. Positions are counted from
the first real item (so a left-padded sequence sees exactly the positions of its unpadded self), padded
keys are never attended to, and outputs at padded query positions are meaningless and must be ignored
(their attention pattern is zero).
"""

from __future__ import annotations

import math

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from circuits.activation_cache import ItemActivationCache
from circuits.config import ModelConfig

PAD = 0


def distance_buckets(n: int, n_buckets: int, device=None) -> Int[Tensor, "q k"]:
    """Bucket of the query–key distance q − k ≥ 0: 0 → 0, 1 → 1, 2–3 → 2, 4–7 → 3, …, capped at n_buckets − 1
    (future keys get bucket 0; they are masked anyway)."""
    pos = torch.arange(n, device=device)
    d = (pos[:, None] - pos[None, :]).clamp(min=0)
    bucket = torch.where(d > 0, torch.floor(torch.log2(d.clamp(min=1).double())).long() + 1, 0)
    return bucket.clamp(max=n_buckets - 1)


def time_buckets(
    times: Float[Tensor, "batch pos"], n_buckets: int, last_query: bool = False
) -> Int[Tensor, "batch q k"]:
    """Bucket of the time gap t_q − t_k (seconds): the query itself → 0, gap < 1 s → 1, then log2-spaced:
    [1, 2) s → 2, [2, 4) s → 3, [4, 8) s → 4, …, capped at n_buckets − 1 (with 32 buckets the last holds gaps
    of 2^29 s, 17 years, and more). Negative gaps (a key later than the query; masked anyway) count as 0 s.
    `last_query`: the last query's row only, [batch, 1, pos]."""
    times = times.double()
    query = times[:, -1:, None] if last_query else times[:, :, None]
    gap = (query - times[:, None, :]).clamp_(min=0)
    # gap = m · 2^e with m in [0.5, 1): floor(log2 gap) = e − 1, exactly (no rounding of a logarithm); a gap
    # in [0, 1) s has e ≤ 0, so e + 1 clamped to [1, n_buckets − 1] is the bucket
    _, exponent = torch.frexp(gap)
    bucket = (exponent + 1).clamp_(1, n_buckets - 1).long()
    n = times.shape[-1]
    if last_query:
        bucket[:, 0, -1] = 0
        return bucket
    return bucket.masked_fill_(torch.eye(n, dtype=torch.bool, device=times.device), 0)


class _BucketScores(torch.autograd.Function):
    """`W[:, bucket]` whose weight gradient is a per-head histogram (`torch.bincount` with weights): the autograd
    of advanced indexing accumulates millions of entries (batch × pos × pos) into a few dozen buckets one by one."""

    @staticmethod
    def forward(ctx, W: Tensor, bucket: Tensor) -> Tensor:
        ctx.save_for_backward(bucket)
        ctx.n_buckets = W.shape[1]
        return W[:, bucket]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (bucket,) = ctx.saved_tensors
        flat, g = bucket.reshape(-1), grad.reshape(len(grad), -1)
        per_head = [torch.bincount(flat, weights=g_h, minlength=ctx.n_buckets) for g_h in g]
        return torch.stack(per_head).to(grad.dtype), None


def bucket_scores(
    W: Float[Tensor, "n_heads n_buckets"], bucket: Int[Tensor, "batch q k"]
) -> Float[Tensor, "n_heads batch q k"]:
    """`W[:, bucket]`: a learned score per head and bucket (equal to the indexing, gradients included)."""
    return _BucketScores.apply(W, bucket)


class Attention(nn.Module):
    """Multi-head causal attention without biases; weights per head, TransformerLens shapes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        shape_in = (cfg.n_heads, cfg.d_model, cfg.d_head)
        if cfg.attention == "learned":
            self.W_Q = nn.Parameter(torch.empty(shape_in))
            self.W_K = nn.Parameter(torch.empty(shape_in))
        self.W_V = nn.Parameter(torch.empty(shape_in))
        self.W_O = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_head, cfg.d_model))
        if cfg.has_static_scores and cfg.distance_buckets:  # per head and bucket; zeros = uniform at init
            self.W_dist = nn.Parameter(torch.zeros(cfg.n_heads, cfg.distance_buckets))
        if cfg.has_static_scores and cfg.time_buckets:
            self.W_time = nn.Parameter(torch.zeros(cfg.n_heads, cfg.time_buckets))
        self.hook_q = HookPoint()  # [batch pos n_heads d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch n_heads query_pos key_pos], masked entries -inf
        self.hook_pattern = HookPoint()  # [batch n_heads query_pos key_pos]
        self.hook_z = HookPoint()  # [batch pos n_heads d_head]
        self.hook_result = HookPoint()  # [batch pos n_heads d_model], each head's output

    def scores(
        self, resid: Float[Tensor, "batch pos d_model"], time_bucket: Int[Tensor, "batch pos pos"] | None = None
    ) -> Float[Tensor, "batch n_heads pos pos"]:
        """Unmasked attention scores of the configured kind (`time_bucket`: see `time_buckets`): QK (learned), the
        static scores (static), their sum (learned with a static bias), or zeros (uniform)."""
        b, n, _ = resid.shape
        if self.cfg.attention == "learned":
            q = self.hook_q(einops.einsum(resid, self.W_Q, "b p d, h d e -> b p h e"))
            k = self.hook_k(einops.einsum(resid, self.W_K, "b p d, h d e -> b p h e"))
            # the scale on q (batch × pos × d_head) rather than on the scores (batch × pos × pos)
            scores = einops.einsum(q / math.sqrt(self.cfg.d_head), k, "b q h e, b k h e -> b h q k")
        else:
            scores = resid.new_zeros(b, self.cfg.n_heads, n, n)
        if self.cfg.has_static_scores:
            scores = scores + self.static_scores(n, time_bucket)
        return scores

    def static_scores(
        self, n: int, time_bucket: Int[Tensor, "batch q pos"] | None = None, last_query: bool = False
    ) -> Float[Tensor, "batch_or_1 n_heads q pos"]:
        """The static part of the scores: W_dist[h, bucket(q − k)] + W_time[h, bucket(t_q − t_k)], whichever the
        head has (batch 1 without time buckets). Enters the scores additively, like the positional QK terms.
        `last_query`: the last query's row only (q = 1; `time_bucket` then from `time_buckets(..., last_query=True)`)."""
        device = self.W_V.device
        scores = None
        if self.cfg.distance_buckets:
            bucket = distance_buckets(n, self.cfg.distance_buckets, device)
            scores = self.W_dist[:, bucket[-1:] if last_query else bucket][None]
        if self.cfg.time_buckets:
            part = einops.rearrange(bucket_scores(self.W_time, time_bucket), "h b q k -> b h q k")
            scores = part if scores is None else scores + part
        if scores is None:
            return torch.zeros(1, self.cfg.n_heads, 1 if last_query else n, n, device=device)
        return scores

    @property
    def OV(self) -> FactoredMatrix:
        """W_OV = W_V W_O per head: [n_heads, d_model, d_model]."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """W_QK = W_Q W_Kᵀ per head: [n_heads, d_model, d_model] (scores are r_q W_QK r_kᵀ / √d_head)."""
        if self.cfg.attention != "learned":
            raise ValueError(f"{self.cfg.attention} attention has no QK circuit")
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    def forward(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        allowed: torch.BoolTensor,
        query_real: Tensor,
        time_bucket: Tensor | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        v = self.hook_v(einops.einsum(resid, self.W_V, "b p d, h d e -> b p h e"))
        scores = self.scores(resid, time_bucket)
        scores = self.hook_attn_scores(scores.masked_fill(~allowed[:, None], float("-inf")))
        # Padded query rows are allowed to see themselves only (no NaN), then zeroed.
        pattern = scores.softmax(dim=-1) * query_real[:, None, :, None]
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(einops.einsum(pattern, v, "b h q k, b k h e -> b q h e"))
        result = self.hook_result(einops.einsum(z, self.W_O, "b q h e, h e d -> b q h d"))
        return result.sum(dim=2)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: Tensor, allowed: torch.BoolTensor, query_real: Tensor, time_bucket=None) -> Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.dropout(self.attn(resid, allowed, query_real, time_bucket)))
        return self.hook_resid_post(resid + attn_out)


class AttnOnlyTransformer(HookedRootModule):
    """Attention-only, LayerNorm-free, bias-free transformer; `cfg.n_layers` may be 0."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # id matrices are stored directly so their state-dict keys are "W_E"/"W_U" despite the properties below
        if cfg.embed_side == "id":
            self._parameters["W_E"] = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        if cfg.uses_text:  # frozen, saved with the weights: a run directory carries its pool's text vectors
            self.register_buffer("E_text", torch.zeros(cfg.d_vocab, cfg.d_text))
        # items without training occurrences (see the module docstring); set by training, saved with the weights
        self.register_buffer("unseen", torch.zeros(cfg.d_vocab, dtype=torch.bool))
        if cfg.embed_side != "id":
            self.W_in = nn.Parameter(torch.empty(cfg.d_text, cfg.d_model))
        if cfg.embed_side == "hybrid":
            self.W_E_id = nn.Parameter(torch.zeros(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model)) if cfg.positional else None
        if cfg.unembed_side == "id" and not cfg.tied:
            self._parameters["W_U"] = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        if cfg.unembed_side != "id":
            self.W_out = nn.Parameter(torch.empty(cfg.d_model, cfg.d_text))
        if cfg.unembed_side == "hybrid":
            self.W_U_id = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_vocab))
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.hook_embed = HookPoint()  # [batch pos d_model]
        self.hook_pos_embed = HookPoint()  # [batch pos d_model]
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        # training at production size (circuits.training.loop.StepLoss): the id item tables are trained as row-major
        # copies `embed_rows` (= W_E) and `unembed_rows` (= W_Uᵀ) [d_vocab, d_model] with row-sparse gradients, held
        # (and registered) by the training module, copied back before every validation; values are the same
        object.__setattr__(self, "embed_rows", None)
        object.__setattr__(self, "unembed_rows", None)
        self.setup()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "unseen" not in state_dict:  # written before 0.3, when every item of a run was seen in training
            state_dict = {**state_dict, "unseen": torch.zeros(self.cfg.d_vocab, dtype=torch.bool)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def set_unseen(self, train_counts) -> None:
        """Mark the items with no training occurrence (`train_counts` [d_vocab] == 0; padding excluded)."""
        unseen = torch.as_tensor(train_counts) == 0
        unseen[0] = False
        self.unseen.copy_(unseen)

    @property
    def unscorable(self) -> torch.BoolTensor | None:
        """Items the model cannot recommend (-inf logits): the unseen ones of an id output; None if none."""
        if self.cfg.unembed_side != "id" or not self.unseen.any():
            return None
        return self.unseen

    def mask_unscorable(self, logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "... d_vocab"]:
        mask = self.unscorable
        return logits if mask is None else logits.masked_fill(mask, float("-inf"))

    # --- weights, TransformerLens style -------------------------------------------------------------
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        """The effective embedding: learned, E_text W_in, or their sum (see the module docstring)."""
        side = self.cfg.embed_side
        if side == "id":
            return self._parameters["W_E"]
        text = self.E_text @ self.W_in
        return text if side == "text" else text + self.W_E_id * ~self.unseen[:, None]

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        """The effective unembedding: learned (or W_Eᵀ when tied), W_out E_textᵀ, or their sum. (An id output's
        unseen items are left to `unembed`/`mask_unscorable`: a -inf column would turn 0 · -inf into NaN.)"""
        side = self.cfg.unembed_side
        if side == "id":
            return self.W_E.T if self.cfg.tied else self._parameters["W_U"]
        text = self.W_out @ self.E_text.T
        return text if side == "text" else text + self.W_U_id * ~self.unseen[None, :]

    @property
    def W_E_text(self) -> FactoredMatrix:
        """The text part of W_E as E_text @ W_in: [d_vocab, d_model] (text and hybrid models)."""
        if self.cfg.embed_side == "id":
            raise ValueError("this model's embedding has no text part (--embed id)")
        return FactoredMatrix(self.E_text, self.W_in)

    @property
    def W_U_text(self) -> FactoredMatrix:
        """The text part of W_U as W_out @ E_textᵀ: [d_model, d_vocab] (text and hybrid models)."""
        if self.cfg.unembed_side == "id":
            raise ValueError("this model's unembedding has no text part (--unembed id)")
        return FactoredMatrix(self.W_out, self.E_text.T)

    def embed_items(self, items: Int[Tensor, "..."]) -> Float[Tensor, "... d_model"]:
        """W_E[items], computed from the items' rows only (a text model never forms the whole W_E here)."""
        side = self.cfg.embed_side
        if side == "id":
            if self.embed_rows is not None:
                return F.embedding(items, self.embed_rows, sparse=True)
            return self._parameters["W_E"][items]
        text = self.E_text[items] @ self.W_in
        return text if side == "text" else text + self.W_E_id[items] * ~self.unseen[items][..., None]

    def unembed_columns(self, items: Int[Tensor, " n"]) -> Float[Tensor, "d_model n"]:
        """W_U[:, items], computed from those columns only (sampled softmax over a large pool)."""
        side = self.cfg.unembed_side
        if side == "id":
            if self.cfg.tied and self.embed_rows is not None:
                return F.embedding(items, self.embed_rows, sparse=True).T
            if self.unembed_rows is not None:
                return F.embedding(items, self.unembed_rows, sparse=True).T
            return self.W_U[:, items]
        text = self.W_out @ self.E_text[items].T
        return text if side == "text" else text + self.W_U_id[:, items] * ~self.unseen[items][None, :]

    def tokens_to_residual_directions(self, items: int | Int[Tensor, "..."]) -> Float[Tensor, "... d_model"]:
        """Each item's logit direction W_U[:, item] (`r_L @ direction` is its logit), under TransformerLens's name:
        `cache.logit_attrs` reads it, with item indices for tokens. A tensor gives items.shape + (d_model,); a
        single item (an int or a one-element tensor) gives [d_model], as in TransformerLens. Columns only (see
        `unembed_columns`); the raw column also for an item `unembed` gives -inf (`unscorable`)."""
        if isinstance(items, str):
            raise TypeError(f"an item model has no tokenizer: give item indices, not {items!r}")
        items = torch.as_tensor(items, device=self.unseen.device)
        columns = self.unembed_columns(items.reshape(-1))  # [d_model, n]
        if items.numel() == 1:
            return columns[:, 0]
        return columns.T.reshape(*items.shape, self.cfg.d_model)

    def _stack(self, name: str) -> Tensor:
        if not self.blocks:
            raise ValueError("a 0-layer model has no attention weights")
        return torch.stack([getattr(b.attn, name) for b in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("W_O")

    @property
    def OV(self) -> FactoredMatrix:
        """[n_layers, n_heads, d_model, d_model]"""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """[n_layers, n_heads, d_model, d_model]"""
        if self.cfg.attention != "learned":
            raise ValueError(f"{self.cfg.attention} attention has no QK circuit")
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    def head_labels(self) -> list[str]:
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]

    # --- forward ------------------------------------------------------------------------------------
    def residual(
        self, items: Int[Tensor, "batch pos"], times: Float[Tensor, "batch pos"] | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """Final residual stream r_L (before unembedding). `times` (seconds, aligned with `items`) is needed by
        attention over time gaps (`cfg.uses_time`) and ignored otherwise."""
        if items.shape[-1] > self.cfg.n_ctx:
            raise ValueError(f"sequence length {items.shape[-1]} exceeds n_ctx={self.cfg.n_ctx}")
        if self.cfg.uses_time and (times is None or times.shape != items.shape):
            raise ValueError("this model's attention reads time gaps: give `times` with the items' shape")
        if self.cfg.uses_time and times.dtype != torch.float64:
            raise ValueError(f"give `times` as float64 seconds ({times.dtype} rounds unix times to minutes)")
        real = items != PAD
        resid = self.hook_embed(self.embed_items(items))
        if self.W_pos is not None:
            # position = index among the real items, so left padding does not shift positions
            pos = (real.long().cumsum(-1) - 1).clamp(min=0)
            resid = resid + self.hook_pos_embed(self.W_pos[pos])
        resid = self.embed_dropout(resid)
        if self.blocks:
            n = items.shape[-1]
            causal = torch.ones(n, n, dtype=torch.bool, device=items.device).tril()
            allowed = causal & real[:, None, :]
            allowed = allowed | (torch.eye(n, dtype=torch.bool, device=items.device) & ~real[:, :, None])
            query_real = real.to(resid.dtype)
            bucket = time_buckets(times, self.cfg.time_buckets) if self.cfg.uses_time else None
            for block in self.blocks:
                resid = block(resid, allowed, query_real, bucket)
        return resid

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """resid @ W_U, with -inf for the items an id output cannot recommend (`unscorable`)."""
        return self.mask_unscorable(resid @ self.W_U)

    def forward(
        self, items: Int[Tensor, "batch pos"], times: Float[Tensor, "batch pos"] | None = None,
        return_type: str | None = "logits",
    ) -> Float[Tensor, "batch pos d_vocab"] | None:
        """Logits over all d_vocab items (column 0, padding, included; callers mask it). `return_type=None` stops at
        the final residual stream and returns None, as in TransformerLens: `run_with_cache(x, return_type=None)`
        caches the activations without unembedding every position (batch × pos × d_vocab logits: 51 GB for 256
        histories of 50 items at a million items)."""
        if return_type is None:
            self.residual(items, times)
            return None
        if return_type != "logits":
            raise ValueError(f"return_type must be 'logits' or None, got {return_type!r}")
        return self.unembed(self.residual(items, times))

    def run_with_cache(self, *model_args, remove_batch_dim: bool = False, **kwargs):
        """`HookedRootModule.run_with_cache` (`names_filter`, `device`, `pos_slice`, …; `times` and `return_type`
        go to `forward`) returning `(output, cache)` with the cached tensors, uncopied, in TransformerLens's
        `ActivationCache` (`circuits.activation_cache.ItemActivationCache`): `cache["blocks.0.attn.hook_pattern"]`
        or `cache["pattern", 0]`, `decompose_resid`, `stack_head_results`, `logit_attrs(stack, items)`, …"""
        out, cache_dict = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        return out, ItemActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim, training=self.training)


def strip_left_padding(items: Int[Tensor, "batch pos"], times: Tensor | None = None):
    """Drop the leading columns that are padding in every row (exact: positions count from the first real
    item, so the logits at real positions do not change). With `times` (aligned with `items`), return both
    stripped alike: `(items, times)`."""
    width = int((items != PAD).sum(-1).max()) if items.numel() else 0
    keep = slice(items.shape[-1] - max(width, 1), None)
    return items[:, keep] if times is None else (items[:, keep], times[:, keep])


def init_weights(model: AttnOnlyTransformer, generator: torch.Generator) -> None:
    """Initialise from an explicit generator (reproducible, and never seeds the global RNG).

    Embeddings ~ N(0, 1/d_model) so residual vectors start with norm ≈ 1; attention and unembedding
    weights ~ N(0, 1/fan_in), with W_O scaled down by √(2·n_layers) so the residual stream does not
    grow with depth (there is no LayerNorm to rein it in).
    """
    cfg = model.cfg

    def normal_(p: Tensor, std: float) -> None:
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=generator) * std)

    # text sides: E_text rows have norm ≈ 1 (L2-normalised encoders), so W_in, W_out ~ N(0, 1/d_model) give
    # E_text W_in and the text logits the same scale as the id matrices; hybrid id parts start at zero
    if cfg.embed_side == "id":
        normal_(model.W_E, cfg.d_model**-0.5)
    else:
        normal_(model.W_in, cfg.d_model**-0.5)
    if model.W_pos is not None:
        normal_(model.W_pos, cfg.d_model**-0.5)
    if cfg.unembed_side == "id" and not cfg.tied:
        normal_(model.W_U, cfg.d_model**-0.5)
    elif cfg.unembed_side != "id":
        normal_(model.W_out, cfg.d_model**-0.5)
    for block in model.blocks:
        a = block.attn
        for p in (a.W_Q, a.W_K, a.W_V) if cfg.attention == "learned" else (a.W_V,):
            normal_(p, cfg.d_model**-0.5)
        normal_(a.W_O, (cfg.d_head * 2 * max(cfg.n_layers, 1)) ** -0.5)


def build_model(
    cfg: ModelConfig, seed: int = 0, E_text: Float[Tensor, "d_vocab d_text"] | None = None
) -> AttnOnlyTransformer:
    """A freshly initialised model; `E_text` (the items' text embeddings, row 0 = padding) for text sides."""
    model = AttnOnlyTransformer(cfg)
    if cfg.uses_text:
        if E_text is None or tuple(E_text.shape) != (cfg.d_vocab, cfg.d_text):
            got = None if E_text is None else tuple(E_text.shape)
            raise ValueError(f"a text or hybrid model needs E_text of shape ({cfg.d_vocab}, {cfg.d_text}), got {got}")
        with torch.no_grad():
            model.E_text.copy_(torch.as_tensor(E_text, dtype=torch.float32))
            model.E_text[0] = 0.0  # padding has no text
    elif E_text is not None:
        raise ValueError("E_text goes with text or hybrid models (embed_side/unembed_side)")
    init_weights(model, torch.Generator().manual_seed(seed))
    return model
