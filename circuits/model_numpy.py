"""The model's forward in numpy, one unpadded sequence at a time, read straight from a run's weights: no torch.

Importing torch takes 1.5 s and TransformerLens (which `circuits.model` needs for its hooks) 1.7 s more; a
one-sequence `python -m circuits.decompose --seq-id` does a few small matrix products. This module computes
the activations a decomposition reads, as `AttnOnlyTransformer.run_with_cache` of one sequence gives them (those
hook names, without the batch axis, plus the final residual stream), from `model.safetensors` with safetensors'
numpy side, in float32 as the model does, so that command starts in well under a second. It is a second
implementation of `circuits.model`'s maths, kept deliberately small (no padding, no batch, no gradients) and tested
against it for every attention kind, item side and depth (`tests/test_model_numpy.py`): equal to float rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from circuits.config import ModelConfig


def distance_buckets(n: int, n_buckets: int) -> np.ndarray:
    """`circuits.model.distance_buckets` in numpy: [q, k] int64."""
    pos = np.arange(n)
    d = np.maximum(pos[:, None] - pos[None, :], 0)
    bucket = np.where(d > 0, np.floor(np.log2(np.maximum(d, 1).astype(np.float64))).astype(np.int64) + 1, 0)
    return np.minimum(bucket, n_buckets - 1)


def time_buckets(times: np.ndarray, n_buckets: int) -> np.ndarray:
    """`circuits.model.time_buckets` of one sequence (float64 seconds [pos]) in numpy: [q, k] int64."""
    times = np.asarray(times, dtype=np.float64)
    gap = np.maximum(times[:, None] - times[None, :], 0.0)
    _, exponent = np.frexp(gap)
    bucket = np.clip(exponent + 1, 1, n_buckets - 1).astype(np.int64)
    np.fill_diagonal(bucket, 0)
    return bucket


def state_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes of `AttnOnlyTransformer(cfg).state_dict()` (tested against it for every config)."""
    V, D, H, E = cfg.d_vocab, cfg.d_model, cfg.n_heads, cfg.d_head
    shapes: dict[str, tuple[int, ...]] = {"unseen": (V,)}
    if cfg.embed_side == "id":
        shapes["W_E"] = (V, D)
    if cfg.uses_text:
        shapes["E_text"] = (V, cfg.d_text)
    if cfg.embed_side != "id":
        shapes["W_in"] = (cfg.d_text, D)
    if cfg.embed_side == "hybrid":
        shapes["W_E_id"] = (V, D)
    if cfg.positional:
        shapes["W_pos"] = (cfg.n_ctx, D)
    if cfg.unembed_side == "id" and not cfg.tied:
        shapes["W_U"] = (D, V)
    if cfg.unembed_side != "id":
        shapes["W_out"] = (D, cfg.d_text)
    if cfg.unembed_side == "hybrid":
        shapes["W_U_id"] = (D, V)
    for l in range(cfg.n_layers):
        prefix = f"blocks.{l}.attn."
        names = ("W_Q", "W_K", "W_V") if cfg.attention == "learned" else ("W_V",)
        shapes.update({prefix + name: (H, D, E) for name in names})
        shapes[prefix + "W_O"] = (H, E, D)
        if cfg.has_static_scores and cfg.distance_buckets:
            shapes[prefix + "W_dist"] = (H, cfg.distance_buckets)
        if cfg.has_static_scores and cfg.time_buckets:
            shapes[prefix + "W_time"] = (H, cfg.time_buckets)
    return shapes


class NumpyModel:
    """A run's weights as float32 numpy arrays (the names of `AttnOnlyTransformer.state_dict()`), with the
    effective W_E rows and W_U of `circuits.model` and the forward of one sequence."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray]):
        self.cfg = cfg
        self.weights = weights
        self.unseen = weights.get("unseen", np.zeros(cfg.d_vocab, dtype=bool)).astype(bool)

    @classmethod
    def load(cls, cfg: ModelConfig, path: str | Path) -> NumpyModel:
        """From a run's `model.safetensors` (every tensor read into memory, as `load_run` does), checked as a strict
        `load_state_dict` checks: the names and shapes of `state_shapes(cfg)`, nothing missing, nothing extra
        (`unseen` may be absent: runs written before 0.3). A mismatch is a ValueError."""
        from safetensors.numpy import load_file

        weights = load_file(str(path))
        want = state_shapes(cfg)
        got = {name: tuple(w.shape) for name, w in weights.items()}
        got.setdefault("unseen", want["unseen"])
        if got != want:
            missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
            shapes = sorted(n for n in want.keys() & got.keys() if want[n] != got[n])
            raise ValueError(f"the weights do not fit the config: missing {missing}, unexpected {extra}, "
                             f"other shapes {shapes}")
        return cls(cfg, weights)

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def embed_items(self, items: np.ndarray) -> np.ndarray:
        """W_E[items] [pos, d_model] (id, text or hybrid: see `circuits.model`)."""
        side = self.cfg.embed_side
        if side == "id":
            return self._w("W_E")[items]
        text = self._w("E_text")[items] @ self._w("W_in")
        return text if side == "text" else text + self._w("W_E_id")[items] * ~self.unseen[items][:, None]

    @property
    def W_U(self) -> np.ndarray:
        """The effective unembedding [d_model, d_vocab] (unscorable items left to `mask_unscorable`)."""
        side = self.cfg.unembed_side
        if side == "id":
            return self._w("W_E").T if self.cfg.tied else self._w("W_U")
        text = self._w("W_out") @ self._w("E_text").T
        return text if side == "text" else text + self._w("W_U_id") * ~self.unseen[None, :]

    @property
    def unscorable(self) -> np.ndarray | None:
        """Items an id output cannot recommend (-inf logits); None if none (as `AttnOnlyTransformer.unscorable`)."""
        if self.cfg.unembed_side != "id" or not self.unseen.any():
            return None
        return self.unseen

    def mask_unscorable(self, logits: np.ndarray) -> np.ndarray:
        mask = self.unscorable
        return logits if mask is None else np.where(mask, np.float32(-np.inf), logits)

    def near_vectors(self, items: np.ndarray) -> np.ndarray:
        """`circuits.interp.sources.near_vectors` at `items`: text embeddings where the model has them, else W_E."""
        return self._w("E_text")[items] if self.cfg.uses_text else self.embed_items(items)

    def _scores(self, l: int, resid: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        """Unmasked attention scores of layer l [n_heads, q, k] (`Attention.scores`)."""
        cfg, n = self.cfg, len(resid)
        prefix = f"blocks.{l}.attn."
        if cfg.attention == "learned":
            q = np.einsum("pd,hde->hpe", resid, self._w(prefix + "W_Q")) / np.float32(np.sqrt(cfg.d_head))
            k = np.einsum("pd,hde->hpe", resid, self._w(prefix + "W_K"))
            scores = q @ k.transpose(0, 2, 1)
        else:
            scores = np.zeros((cfg.n_heads, n, n), dtype=np.float32)
        if "distance" in cfg.static_over:
            scores = scores + self._w(prefix + "W_dist")[:, distance_buckets(n, cfg.distance_buckets)]
        if "time" in cfg.static_over:
            scores = scores + self._w(prefix + "W_time")[:, time_buckets(times, cfg.time_buckets)]
        return scores

    def run_with_cache(self, items: np.ndarray, times: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The activations of one unpadded sequence (`items` int [pos], `times` float64 seconds [pos] for attention
        over time gaps), under `run_with_cache`'s names without the batch axis: hook_embed, hook_pos_embed,
        blocks.{l}.hook_resid_pre, blocks.{l}.attn.hook_pattern [n_heads, q, k], blocks.{l}.attn.hook_result
        [pos, n_heads, d_model], hook_resid_final (r_L)."""
        cfg = self.cfg
        items = np.asarray(items, dtype=np.int64)
        n = len(items)
        if n > cfg.n_ctx:
            raise ValueError(f"sequence length {n} exceeds n_ctx={cfg.n_ctx}")
        if (items == 0).any():
            raise ValueError("give one unpadded sequence (item index 0 is padding)")
        if cfg.uses_time and (times is None or len(times) != n):
            raise ValueError("this model's attention reads time gaps: give `times` with the items' shape")
        cache = {"hook_embed": self.embed_items(items)}
        resid = cache["hook_embed"]
        if cfg.positional:
            cache["hook_pos_embed"] = self._w("W_pos")[:n]
            resid = resid + cache["hook_pos_embed"]
        causal = np.tril(np.ones((n, n), dtype=bool))
        for l in range(cfg.n_layers):
            cache[f"blocks.{l}.hook_resid_pre"] = resid
            scores = np.where(causal, self._scores(l, resid, times), np.float32(-np.inf))
            scores = scores - scores.max(-1, keepdims=True)
            e = np.exp(scores)
            pattern = e / e.sum(-1, keepdims=True)
            v = np.einsum("pd,hde->hpe", resid, self._w(f"blocks.{l}.attn.W_V"))
            z = pattern @ v  # [h, q, e]
            result = np.einsum("hqe,hed->qhd", z, self._w(f"blocks.{l}.attn.W_O"))
            cache[f"blocks.{l}.attn.hook_pattern"] = pattern
            cache[f"blocks.{l}.attn.hook_result"] = result
            resid = resid + result.sum(1)
        cache["hook_resid_final"] = resid
        return cache
