"""Data pipeline: read logs (or generate the synthetic default), build sequences, split, cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuits.data.names import DEFAULT_DATA

if TYPE_CHECKING:
    from circuits.data.readers import LogSpec
    from circuits.data.sequences import SequenceDataset

# imported on first use (PEP 562): the commands' `--help` reads `circuits.data.names` without pandas
_NAMES = {"load_log_dataset": "circuits.data.cache", "LogSpec": "circuits.data.readers",
          "read_log": "circuits.data.readers", "EvalSplit": "circuits.data.sequences",
          "Preprocess": "circuits.data.sequences", "SequenceDataset": "circuits.data.sequences",
          "build_dataset": "circuits.data.sequences"}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'circuits.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), name)


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
    pool: str = "log",
    cold_items: float = 0.0,
    cold_seed: int = 0,
    engine: str = "auto",
    progress: bool = True,
) -> SequenceDataset:
    """`data` = "synthetic" (the built-in default, generated with `seed` on first use and cached) or a path to
    a log; the other arguments say how to read it (see `circuits.data.readers`) and preprocess it (see
    `circuits.data.sequences`: k-core, tie-break, the candidate pool, the cold-start split); `engine` how a log is
    read (pandas in memory, or DuckDB out of core; `auto` picks by size; the same result either way)."""
    from circuits.data.cache import load_log_dataset
    from circuits.data.sequences import Preprocess

    pre = Preprocess(kcore=kcore, tie_break=tie_break, pool=pool, cold_items=cold_items, cold_seed=cold_seed)
    spec = log_spec(data, format=format, user_col=user_col, item_col=item_col, time_col=time_col, items=items,
                    title_col=title_col, seed=seed)
    return load_log_dataset(spec, pre, name=f"synthetic (seed {seed})" if data == DEFAULT_DATA else None,
                            engine=engine, progress=progress)


def log_spec(
    data: str = DEFAULT_DATA,
    *,
    format: str = "auto",
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    items: str | None = None,
    title_col: str | None = None,
    seed: int = 0,
) -> LogSpec:
    """Where `load_dataset(data, …)` reads from, with its reading options (the synthetic default: its generated
    folder for `seed`)."""
    from circuits.data.readers import LogSpec

    if data == DEFAULT_DATA:
        # imported here, not above: `python -m circuits.data.synthetic` must find the module not yet imported
        from circuits.data.synthetic import SyntheticConfig, ensure_synthetic

        return LogSpec(str(ensure_synthetic(SyntheticConfig(seed=seed))))
    return LogSpec(data, format, user_col, item_col, time_col, items, title_col)


__all__ = [
    "DEFAULT_DATA",
    "EvalSplit",
    "LogSpec",
    "Preprocess",
    "SequenceDataset",
    "build_dataset",
    "load_dataset",
    "load_log_dataset",
    "log_spec",
    "read_log",
]
