"""Training: one code path for every depth (0, 1, 2, … layers).

Loss: next-item cross-entropy at every real position of the training windows, either over all items
(full softmax, `negatives=0`) or over the target plus K negatives shared by the batch (sampled softmax,
uniform or popularity-proportional), with the log-Q correction `logit - log q(item)` on every candidate
so the sampled loss estimates the full one. Checkpoints are chosen on **validation** NDCG@10 (full
ranking, under the data's seen-item policy); the test split is only touched once, at the end.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from circuits.config import ModelConfig
from circuits.data.sequences import EvalSplit, SequenceDataset
from circuits.errors import UserError
from circuits.metrics import evaluate_split
from circuits.model import AttnOnlyTransformer, build_model, strip_left_padding
from circuits.runs import finish, partial_dir, save_state, save_weights, write_json

AUTO_FULL_SOFTMAX_MAX_ITEMS = 2_048  # above this, 512 shared negatives: ~3x faster epochs on ML-1M (3,416 items), better NDCG per minute


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    negatives: int = -1  # -1: auto (full softmax up to 2,048 items, else 512); 0: full softmax; K: sampled
    sampling: str = "uniform"  # or "popularity" (negatives ∝ training counts)
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    # reduce on plateau: lr *= decay_factor after decay_patience epochs without a better validation NDCG@10
    # (counted from the best epoch or the last decay); decay_patience 0 = constant lr after warm-up
    decay_patience: int = 3
    decay_factor: float = 0.3
    max_minutes: float = 0.0  # 0 = no time limit
    seen_policy: str = "auto"  # for checkpoint selection: auto = excluded unless users repeat items
    seed: int = 0
    # keep the best-on-validation weights as of these training times (minutes), to measure learning curves
    snapshot_minutes: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # a list from argparse or JSON becomes a tuple, so the config stays hashable and compares equal
        object.__setattr__(self, "snapshot_minutes", tuple(self.snapshot_minutes))

    def resolved_negatives(self, n_items: int) -> int:
        if self.negatives >= 0:
            return self.negatives
        return 0 if n_items <= AUTO_FULL_SOFTMAX_MAX_ITEMS else 512

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def resolve_seen_policy(policy: str, ds: SequenceDataset) -> str:
    if policy == "auto":
        return "included" if ds.has_repeats else "excluded"
    if policy not in ("excluded", "included"):
        raise UserError(f"unknown seen-item policy {policy!r} (auto, excluded, included)")
    return policy


def next_item_loss(
    model: AttnOnlyTransformer,
    inputs: Tensor,
    targets: Tensor,
    n_negatives: int,
    log_q: Tensor | None = None,
    times: Tensor | None = None,
) -> Tensor:
    """Mean cross-entropy over real positions (target ≠ 0); logits only where there is a target."""
    resid = model.residual(inputs, times)
    mask = targets != 0
    r, y = resid[mask], targets[mask]  # [N, d_model], [N]
    W_U = model.W_U
    if n_negatives == 0:
        logits = r @ W_U
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, y)
    assert log_q is not None
    neg = torch.multinomial(log_q.exp(), n_negatives, replacement=True)  # [K], shared by the batch
    pos_logit = (r * W_U[:, y].T).sum(-1, keepdim=True) - log_q[y][:, None]
    neg_logit = r @ W_U[:, neg] - log_q[neg][None, :]
    neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], float("-inf"))  # a negative equal to the target
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long))


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of sequences of similar length, so padding columns can be cut off.

    Sequences are sorted by length with a random tie order, cut into consecutive batches, and the batch
    order is shuffled: every sequence appears once per epoch; only which ones share a batch is constrained.
    """
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _take_snapshots(part: Path, minutes: tuple[float, ...], elapsed: float, final: bool) -> None:
    """snapshots/best@{m}min.safetensors = the best weights among epochs that ended within m minutes.

    Called at the end of each epoch *before* the best weights are updated with it, so an epoch that ends
    after the mark never counts; at the end of training, marks not reached get the final best weights.
    """
    import shutil

    for m in minutes:
        target = part / "snapshots" / f"best@{m:g}min.safetensors"
        if not target.exists() and (final or elapsed > m * 60) and (part / "model.safetensors").exists():
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(part / "model.safetensors", target)


def model_scorer(model: AttnOnlyTransformer, split: EvalSplit):
    """Scores for the next item after each (left-padded) history of `split`: logits at the last position.
    (A model with time-gap attention reads the rows' `split.history_times`.)"""

    def score(history: Tensor, rows: np.ndarray) -> Tensor:
        if not model.cfg.uses_time:
            return model.unembed(model.residual(strip_left_padding(history))[:, -1])
        items, times = strip_left_padding(history, torch.from_numpy(split.history_times[rows]))
        return model.unembed(model.residual(items, times)[:, -1])

    return score


def _negative_log_q(ds: SequenceDataset, sampling: str) -> Tensor:
    if sampling == "uniform":
        q = torch.ones(ds.d_vocab, dtype=torch.float64)
    elif sampling == "popularity":
        q = torch.from_numpy(ds.train_counts()).double() + 1.0
    else:
        raise UserError(f"unknown negative sampling {sampling!r} (uniform or popularity)")
    q[0] = 0.0
    return (q / q.sum()).log().float()


@torch.no_grad()
def validate(model: AttnOnlyTransformer, split, d_vocab: int, policy: str) -> dict[str, float]:
    was_training = model.training
    model.eval()
    m = evaluate_split(model_scorer(model, split), split, d_vocab, n_sampled=0)[f"full/{policy}"]
    model.train(was_training)
    return m


def train(
    ds: SequenceDataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    run_dir: Path,
    record: dict,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train into `run_dir` (via `run_dir.partial`); return `run_dir` once complete.

    `record` is what config.json stores about the data and the command (source, options, argv).
    """
    part = partial_dir(run_dir)
    policy = resolve_seen_policy(cfg.seen_policy, ds)
    n_neg = cfg.resolved_negatives(ds.n_items)
    model = build_model(model_cfg, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed)  # dropout and negative sampling; one seed per entry point
    start_epoch, best, history, elapsed = 0, {"epoch": -1, "NDCG@10": -1.0}, [], 0.0
    lr_scale, last_decay = 1.0, -1
    if resume:
        state = torch.load(part / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history, elapsed = state["epoch"] + 1, state["best"], state["history"], state["elapsed"]
        lr_scale, last_decay = state["lr_scale"], state["last_decay"]
    else:
        part.mkdir(parents=True)
        write_json(part / "config.json", {
            "model": model_cfg.to_dict(),
            "train": {**asdict(cfg), "resolved_negatives": n_neg, "resolved_seen_policy": policy},
            "data": {**record["data"], "fingerprint": ds.fingerprint, "summary": ds.summary()},
        })
        write_json(part / "argv.json", record.get("argv", []))
        counts = ds.train_counts()
        pd.DataFrame({"index": np.arange(ds.d_vocab), "item_id": ds.item_ids, "title": ds.titles,
                      "train_count": counts}).to_csv(part / "vocab.tsv", sep="\t", index=False)

    inputs, targets, input_times = (torch.from_numpy(a) for a in ds.train_windows(model_cfg.n_ctx))
    lengths = (targets != 0).sum(1).numpy()
    valid = ds.eval_split("valid", model_cfg.n_ctx)
    log_q = _negative_log_q(ds, cfg.sampling) if n_neg else None
    steps_per_epoch = len(length_batches(lengths, cfg.batch_size, np.random.default_rng(0)))
    step = start_epoch * steps_per_epoch
    model.train()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train L{model_cfg.n_layers}", unit="epoch",
               disable=not progress, initial=start_epoch, total=cfg.epochs)
    stop_reason = "epochs"
    for epoch in bar:
        t0 = time.perf_counter()
        total, n_batches = 0.0, 0
        for idx in length_batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch])):
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * lr_scale * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            width = int(lengths[idx].max())  # the targets' width; strip_left_padding works on inputs only
            x, y = inputs[idx, -width:], targets[idx, -width:]
            t = input_times[idx, -width:] if model_cfg.uses_time else None
            loss = next_item_loss(model, x, y, n_neg, log_q, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, n_batches, step = total + loss.item(), n_batches + 1, step + 1
        m = validate(model, valid, ds.d_vocab, policy)
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, "loss": total / n_batches, "minutes": elapsed / 60, "lr": cfg.lr * lr_scale,
               **{f"valid_{k}": v for k, v in m.items() if k.endswith("@10")}}
        history.append(row)
        _take_snapshots(part, cfg.snapshot_minutes, elapsed, final=False)
        if m["NDCG@10"] > best["NDCG@10"]:
            best = {"epoch": epoch, "NDCG@10": m["NDCG@10"]}
            save_weights(model, part / "model.safetensors")
        if cfg.decay_patience and epoch - max(best["epoch"], last_decay) >= cfg.decay_patience:
            lr_scale, last_decay = lr_scale * cfg.decay_factor, epoch
        pd.DataFrame(history).to_csv(part / "epochs.csv", index=False)
        save_state(part / "state.pt", model, optimizer, epoch, best, history, elapsed,
                   lr_scale=lr_scale, last_decay=last_decay)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{m['NDCG@10']:.4f}", best=f"{best['NDCG@10']:.4f}")
        if epoch - best["epoch"] >= cfg.patience:
            stop_reason = "patience"
            break
        if cfg.max_minutes and elapsed >= cfg.max_minutes * 60:
            stop_reason = "time limit"
            break
    bar.close()
    _take_snapshots(part, cfg.snapshot_minutes, elapsed, final=True)

    model.load_state_dict(load_file(str(part / "model.safetensors")))
    model.eval()
    from circuits.evaluation import full_report  # here to keep the import graph one-way

    report = full_report(model, ds, model_cfg.n_ctx)
    report["training"] = {"best_epoch": best["epoch"], "epochs_run": len(history), "stopped_by": stop_reason,
                          "minutes": elapsed / 60, "selection": f"valid full/{policy} NDCG@10"}
    write_json(part / "metrics.json", report)
    finish(run_dir)
    return run_dir
