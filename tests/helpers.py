"""Shared by several test modules: tiny synthetic journeys, seconds-long training, static-attention weights."""

from pathlib import Path

import torch

from circuits import train
from circuits.data.synthetic import SyntheticConfig, write

# a tiny model and 3 epochs: a run in about a second
FAST = ["--d-model", "16", "--d-head", "8", "--batch-size", "32", "--quiet", "--warmup-steps", "5", "--epochs", "3"]


def tiny_journeys(folder: Path, n_users: int, max_length: int) -> Path:
    """Synthetic journeys over 3 topics of 10 documents (plus one series each), written to `folder`."""
    return write(SyntheticConfig(n_topics=3, docs_per_topic=10, series_per_topic=1, n_users=n_users, min_length=8,
                                 max_length=max_length), folder)


def train_tiny(data: Path | str, out: Path, layers: int, *extra: str) -> Path:
    train.main(["--layers", str(layers), "--data", str(data), "--out", str(out), *FAST, *extra])
    return out


# every attention kind as ModelConfig keywords: learned QK, static over distance / time gaps / both, uniform, and
# learned QK plus a static bias over time gaps (and distance)
ATTENTION_VARIANTS = {
    "learned": {"attention": "learned"},
    "static": {"attention": "static"},
    "time": {"attention": "static", "distance_buckets": 0, "time_buckets": 6},
    "distance+time": {"attention": "static", "distance_buckets": 3, "time_buckets": 6},
    "uniform": {"attention": "uniform"},
    "learned+time": {"attention": "learned", "static_bias": True, "distance_buckets": 0, "time_buckets": 6},
    "learned+distance+time": {"attention": "learned", "static_bias": True, "distance_buckets": 3, "time_buckets": 6},
}


def example_times(n: int, batch: int = 1) -> torch.Tensor:
    """Timestamps (seconds) for n items whose gaps fall in many time buckets: same second, < 1 s, minutes, days."""
    steps = torch.tensor([0.0, 0.0, 0.4, 3.0, 100.0, 0.0, 5000.0, 2e6, 7.0, 1e5, 30.0, 1.0])
    return (1.7e9 + steps[:n].cumsum(0)).double().expand(batch, n).clone()


def with_random_distance_weights(model, seed: int):
    """Static-attention weights (distance and time buckets) start at zero (uniform); random values let a test
    tell the buckets apart."""
    g = torch.Generator().manual_seed(seed)
    for block in model.blocks:
        for name in ("W_dist", "W_time"):
            if hasattr(block.attn, name):
                getattr(block.attn, name).data = torch.randn(getattr(block.attn, name).shape, generator=g)
    return model


def interrupt_at_second_epoch(monkeypatch):
    """Make training raise KeyboardInterrupt in its second epoch's validation; return the real function."""
    import circuits.training.loop as training

    real_validate, calls = training.validate, []

    def crash(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*a, **kw)

    monkeypatch.setattr(training, "validate", crash)
    return real_validate


# every item side as ModelConfig keywords (the text sides with 6-dimensional text embeddings)
ITEM_SIDE_VARIANTS = {
    "id": {},
    "text": {"embed_side": "text", "unembed_side": "text", "d_text": 6},
    "hybrid": {"embed_side": "hybrid", "unembed_side": "hybrid", "d_text": 6},
    "text-in": {"embed_side": "text", "d_text": 6},
    "text-out": {"unembed_side": "text", "d_text": 6},
}


def text_vectors(d_vocab: int, d_text: int, seed: int = 0) -> torch.Tensor:
    """Unit-norm random 'text embeddings' [d_vocab, d_text] (row 0, padding, is zeroed by build_model)."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(d_vocab, d_text, generator=g), dim=-1)


def model_with_sides(side: str, n_layers: int, seed: int = 0, **cfg_kw):
    """A tiny eval-mode model of an item-side variant; the hybrid id parts (zero at init) made random, so a test
    can tell a dropped term from a zero one."""
    from circuits.config import ModelConfig
    from circuits.model import build_model

    kw = {"d_vocab": 11, "n_ctx": 8, "n_layers": n_layers, "n_heads": 2, "d_model": 12, "d_head": 4,
          **ITEM_SIDE_VARIANTS[side], **cfg_kw}
    cfg = ModelConfig(**kw)
    model = build_model(cfg, seed=seed, E_text=text_vectors(cfg.d_vocab, cfg.d_text, seed) if cfg.d_text else None)
    g = torch.Generator().manual_seed(seed + 1)
    for name in ("W_E_id", "W_U_id"):
        if hasattr(model, name):
            getattr(model, name).data = 0.3 * torch.randn(getattr(model, name).shape, generator=g)
    return model.eval()
