"""Evaluate a model and the baselines on validation and test, every protocol and policy."""

from __future__ import annotations

import pandas as pd

from circuits.baselines import BASELINES, baseline_scorer
from circuits.data.sequences import SequenceDataset
from circuits.metrics import evaluate_split
from circuits.model import AttnOnlyTransformer

PROTOCOLS = ("full/excluded", "full/included", "sampled")


def full_report(
    model: AttnOnlyTransformer | None, ds: SequenceDataset, n_ctx: int, baselines: tuple[str, ...] = BASELINES, seed: int = 0
) -> dict:
    """{"model": {split: {protocol: metrics}}, "baselines": {name: {split: {protocol: metrics}}}}."""
    from circuits.training import model_scorer

    splits = {s: ds.eval_split(s, n_ctx) for s in ("valid", "test")}
    out: dict = {"protocols": {
        "full/excluded": "full ranking over all items; items in the user's history removed (a repeated target counts as a miss)",
        "full/included": "full ranking over all items; history items kept",
        "sampled": "SAMPLED: target vs 100 items the user never touched, uniform, seeded",
        "ties": "pessimistic",
    }}
    if model is not None:
        out["model"] = {s: evaluate_split(model_scorer(model, sp), sp, ds.d_vocab, seed=seed) for s, sp in splits.items()}
    out["baselines"] = {
        b: {s: evaluate_split(baseline_scorer(b, ds), sp, ds.d_vocab, seed=seed) for s, sp in splits.items()}
        for b in baselines
    }
    return out


def report_table(report: dict, metrics: tuple[str, ...] = ("HR@10", "NDCG@10", "MRR@10")) -> pd.DataFrame:
    """Long → wide: one row per (system, split, protocol), one column per metric."""
    rows = []
    systems = ([("model", report["model"])] if "model" in report else []) + list(report["baselines"].items())
    for name, by_split in systems:
        for split, by_protocol in by_split.items():
            for protocol, m in by_protocol.items():
                rows.append({"system": name, "split": split, "protocol": protocol, **{k: m[k] for k in metrics}})
    return pd.DataFrame(rows)


def evaluate_run(run, ds: SequenceDataset | None = None, seed: int = 0) -> dict:
    """`full_report` for a loaded run, on its own data (rebuilt and fingerprint-checked) unless `ds` is given."""
    from circuits.runs import check_matches

    if ds is None:
        ds = run.dataset()
    else:
        check_matches(run, ds)
    return full_report(run.model, ds, run.model.cfg.n_ctx, seed=seed)
