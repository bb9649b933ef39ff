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


def with_random_distance_weights(model, seed: int):
    """Static-attention weights start at zero (uniform); random values let a test tell the buckets apart."""
    for block in model.blocks:
        if hasattr(block.attn, "W_dist"):
            block.attn.W_dist.data = torch.randn(block.attn.W_dist.shape, generator=torch.Generator().manual_seed(seed))
    return model
