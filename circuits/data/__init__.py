"""Data pipeline: read logs (or generate the synthetic default), build sequences, split, cache."""

from __future__ import annotations

from circuits.data.readers import DEFAULT_DATA, LogSpec, read_log
from circuits.data.sequences import EvalSplit, Preprocess, SequenceDataset, build_dataset, load_log_dataset


def load_dataset(
    data: str = DEFAULT_DATA,
    *,
    format: str = "auto",
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    items: str | None = None,
    title_col: str | None = None,
    kcore: int = 0,
    tie_break: str = "file",
    seed: int = 0,
) -> SequenceDataset:
    """`data` = "synthetic" (the built-in default, generated with `seed` on first use and cached) or a path to
    a log; the other arguments say how to read it (see `circuits.data.readers`) and preprocess it."""
    pre = Preprocess(kcore=kcore, tie_break=tie_break)
    if data == DEFAULT_DATA:
        # imported here, not above: `python -m circuits.data.synthetic` must find the module not yet imported
        from circuits.data.synthetic import SyntheticConfig, ensure_synthetic

        spec = LogSpec(str(ensure_synthetic(SyntheticConfig(seed=seed))))
        return load_log_dataset(spec, pre, name=f"synthetic (seed {seed})")
    spec = LogSpec(data, format, user_col, item_col, time_col, items, title_col)
    return load_log_dataset(spec, pre)


__all__ = [
    "DEFAULT_DATA",
    "EvalSplit",
    "LogSpec",
    "Preprocess",
    "SequenceDataset",
    "build_dataset",
    "load_dataset",
    "load_log_dataset",
    "read_log",
]
