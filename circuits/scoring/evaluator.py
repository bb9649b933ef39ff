"""A model (or none) and the baselines on validation and test, under every protocol and policy.

`model_scorer` turns a model into the scorer the metrics take; `evaluate_model` returns the nested metrics
dict a run stores as metrics.json; `metrics_table` flattens it for display.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from circuits.data.sequences import EvalSplit, SequenceDataset
from circuits.errors import UserError
from circuits.model import AttnOnlyTransformer, strip_left_padding
from circuits.scoring.baselines import BASELINES, EMB_MEAN_K, TEXT_BASELINES, baseline_scorer
from circuits.scoring.metrics import Scorer, evaluate_split

PROTOCOLS = ("full/excluded", "full/included", "sampled")
PROTOCOL_NOTES = {
    "full/excluded": "full ranking over all items; items in the user's history removed (a repeated target counts as a miss)",
    "full/included": "full ranking over all items; history items kept",
    "sampled": "SAMPLED: target vs 100 items the user never touched, uniform, seeded",
    "ties": "pessimistic",
}


def model_scorer(model: AttnOnlyTransformer, split: EvalSplit) -> Scorer:
    """Scores for the next item after each (left-padded) history of `split`: logits at the last position
    (`model.unembed`: items an id output never saw in training score -inf). A model with time-gap attention
    reads the rows' `split.history_times`."""

    device = model.unseen.device  # scores come back to the CPU, where the ranks are counted

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        if not model.cfg.uses_time:
            return model.unembed(model.residual(strip_left_padding(history).to(device))[:, -1]).cpu()
        items, times = strip_left_padding(history, torch.from_numpy(split.history_times[rows]))
        return model.unembed(model.residual(items.to(device), times.to(device))[:, -1]).cpu()

    return score


def resolve_seen_policy(policy: str, ds: SequenceDataset) -> str:
    """'auto' → 'included' where users repeat items, else 'excluded'."""
    if policy == "auto":
        return "included" if ds.has_repeats else "excluded"
    if policy not in ("excluded", "included"):
        raise UserError(f"unknown seen-item policy {policy!r} (auto, excluded, included)")
    return policy


def evaluation_splits(ds: SequenceDataset, n_ctx: int, users: np.ndarray | None = None) -> dict[str, EvalSplit]:
    """valid and test (of every user with ≥ 3 interactions, or of `users`, e.g. `sample_eval_users`'s sample);
    where some test targets never occur in training (a cold-start split), also `test/cold` (those users) and
    `test/warm` (the others)."""
    splits = {s: ds.eval_split(s, n_ctx, users=users) for s in ("valid", "test")}
    cold = ds.cold_targets(splits["test"])
    if cold.any():
        splits["test/cold"] = splits["test"].subset(cold, "test/cold")
        splits["test/warm"] = splits["test"].subset(~cold, "test/warm")
    return splits


def evaluate_model(
    model: AttnOnlyTransformer | None, ds: SequenceDataset, n_ctx: int, baselines: tuple[str, ...] = BASELINES,
    seed: int = 0, text: Tensor | None = None, emb_mean_k: int = EMB_MEAN_K, users: np.ndarray | None = None,
    eval_seed: int = 0,
) -> dict:
    """{"protocols": notes, "users": {split: n}, "model": {split: {protocol: metrics}},
    "baselines": {name: {split: {protocol: …}}}}, plus "user_sample": {"users", "of", "seed"} when `users` (a
    sample of the users with ≥ 3 interactions, drawn by `sample_eval_users` with `eval_seed`) is given.

    Splits: see `evaluation_splits`. With the items' text embeddings (`text` [d_vocab, d_text]; by default a text
    or hybrid model's own `E_text`) the text baselines (emb-mean over the last `emb_mean_k` items, text-knn)
    join the others."""
    splits = evaluation_splits(ds, n_ctx, users)
    if text is None and model is not None and model.cfg.uses_text:
        text = model.E_text
    if text is not None:
        baselines = tuple(baselines) + tuple(b for b in TEXT_BASELINES if b not in baselines)
    out: dict = {"protocols": dict(PROTOCOL_NOTES), "users": {s: len(sp) for s, sp in splits.items()}}
    if users is not None:
        out["user_sample"] = {"users": int(len(users)), "of": int(len(ds.eval_users())), "seed": int(eval_seed)}
    if model is not None:
        out["model"] = {s: evaluate_split(model_scorer(model, sp), sp, ds.d_vocab, seed=seed) for s, sp in splits.items()}
    out["baselines"] = {
        b: {s: evaluate_split(baseline_scorer(b, ds, text, emb_mean_k), sp, ds.d_vocab, seed=seed)
            for s, sp in splits.items()}
        for b in baselines
    }
    return out


def metrics_table(metrics: dict, columns: tuple[str, ...] = ("HR@10", "NDCG@10", "MRR@10")) -> pd.DataFrame:
    """`evaluate_model`'s nested dict → one row per (system, split, protocol), one column per metric."""
    rows = []
    systems = ([("model", metrics["model"])] if "model" in metrics else []) + list(metrics["baselines"].items())
    for name, by_split in systems:
        for split, by_protocol in by_split.items():
            for protocol, m in by_protocol.items():
                rows.append({"system": name, "split": split, "protocol": protocol, **{k: m[k] for k in columns}})
    return pd.DataFrame(rows)


def evaluate_run(run, ds: SequenceDataset | None = None, seed: int = 0, emb_mean_k: int | None = None,
                 eval_users: int = 0, eval_seed: int = 0) -> dict:
    """`evaluate_model` for a loaded run, on its own data (rebuilt and fingerprint-checked) unless `ds` is given;
    the emb-mean window of the run's training config unless `emb_mean_k` is given; on a seeded sample of
    `eval_users` users (0 = all)."""
    from circuits.data.sequences import sample_eval_users

    if ds is None:
        ds = run.dataset()
    else:
        run.check_data(ds)
    k = emb_mean_k if emb_mean_k is not None else run.config["train"].get("emb_mean_k", EMB_MEAN_K)
    users = sample_eval_users(ds, eval_users, eval_seed)
    return evaluate_model(run.model, ds, run.model.cfg.n_ctx, seed=seed, emb_mean_k=k, users=users,
                          eval_seed=eval_seed)


def sample_note(metrics: dict) -> str:
    """'' for metrics of every user; else ', a seeded sample of N of M users (seed s)', to print beside a figure."""
    sample = metrics.get("user_sample")
    if not sample:
        return ""
    return f", a seeded sample of {sample['users']:,} of {sample['of']:,} users (seed {sample['seed']})"
