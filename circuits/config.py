"""Configuration dataclasses. Every checkpoint carries its `ModelConfig`; a run carries its `TrainConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


ATTENTION_KINDS = ("learned", "static", "uniform")
DISTANCE_BUCKETS = 12  # 0, 1, 2–3, …, ≥ 1024 items back
TIME_BUCKETS = 32  # self, < 1 s, [1, 2) s, [2, 4) s, …, ≥ 2^29 s (17 years)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an attention-only transformer over items.

    `d_vocab = n_items + 1`: index 0 is the padding item, which is never predicted and never attended to.
    """

    d_vocab: int
    n_ctx: int
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    d_head: int = 32
    positional: bool = True  # learned W_pos; False = no positional embedding at all
    tied: bool = False  # W_U = W_Eᵀ (makes the bigram table E U symmetric)
    # on the embeddings and on each layer's attention output; off in eval mode. (Not on attention patterns:
    # sampling a mask of batch·heads·pos² entries costs a third of a CPU training step.)
    dropout: float = 0.2
    # "learned": scores from QK; "static": no QK, a learned score per head and log-spaced query–key bucket of
    # position distance (0, 1, 2–3, 4–7, …; `distance_buckets`, 0 = not used) plus one per bucket of time gap
    # (self, < 1 s, [1, 2) s, [2, 4) s, …; `time_buckets`, 0 = not used); "uniform": equal weight on every visible
    # item (no attention parameters)
    attention: str = "learned"
    distance_buckets: int = DISTANCE_BUCKETS
    time_buckets: int = 0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r}")
        for name in ("d_vocab", "n_ctx", "n_heads", "d_model", "d_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.distance_buckets < 0 or self.time_buckets < 0:
            raise ValueError("distance_buckets and time_buckets must be 0 or more")
        if self.attention == "static" and not (self.distance_buckets or self.time_buckets):
            raise ValueError("static attention needs distance buckets, time buckets or both")
        if self.n_layers < 0:
            raise ValueError(f"n_layers must be 0 or more, got {self.n_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def uses_time(self) -> bool:
        """True when attention reads the items' timestamps (the model then needs `times` as input)."""
        return self.attention == "static" and self.time_buckets > 0 and self.n_layers > 0

    @property
    def attention_label(self) -> str:
        """'learned', 'uniform', or 'static over distance', 'static over time', 'static over distance + time'."""
        if self.attention != "static":
            return self.attention
        over = [name for name, n in (("distance", self.distance_buckets), ("time", self.time_buckets)) if n]
        return "static over " + " + ".join(over)

    @property
    def n_items(self) -> int:
        return self.d_vocab - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)
