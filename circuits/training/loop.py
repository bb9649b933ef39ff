"""The training loop: one code path for every depth (0, 1, 2, … layers).

Checkpoints are chosen on **validation** NDCG@10 (full ranking, under the data's seen-item policy); the test
split is only touched once, at the end. Everything a run needs to be rebuilt, resumed and analysed goes
into its directory (see `circuits.runs`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from circuits.config import ModelConfig, TrainConfig
from circuits.data.sequences import EvalSplit, SequenceDataset
from circuits.model import AttnOnlyTransformer, build_model
from circuits.runs import finish, partial_dir, save_state, save_weights, write_json
from circuits.scoring.evaluator import evaluate_model, model_scorer, resolve_seen_policy
from circuits.scoring.metrics import evaluate_split
from circuits.training.loss import negative_log_q, next_item_loss
from circuits.training.schedule import decay_due, learning_rate, length_batches, stop_reason


def _take_snapshots(part: Path, minutes: tuple[float, ...], elapsed: float, final: bool) -> None:
    """snapshots/best@{m}min.safetensors = the best weights among epochs that ended within m minutes.

    Called at the end of each epoch *before* the best weights are updated with it, so an epoch that ends
    after the mark never counts; at the end of training, marks not reached get the final best weights.
    """
    for m in minutes:
        target = part / "snapshots" / f"best@{m:g}min.safetensors"
        if not target.exists() and (final or elapsed > m * 60) and (part / "model.safetensors").exists():
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(part / "model.safetensors", target)


@torch.no_grad()
def validate(model: AttnOnlyTransformer, split: EvalSplit, d_vocab: int, policy: str) -> dict[str, float]:
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
    E_text: torch.Tensor | None = None,
) -> Path:
    """Train into `run_dir` (via `run_dir.partial`); return `run_dir` once complete.

    `record` is what config.json stores about the data (`record["data"]`: source and options, see
    `circuits.runs.data_record`), the command (`record["argv"]`) and, for text sides, the embeddings
    (`record["text"]`). `E_text` [d_vocab, d_text]: the items' text embeddings of a text or hybrid model (on
    resume they come back from the saved state).
    """
    run_dir = Path(run_dir)
    part = partial_dir(run_dir)
    policy = resolve_seen_policy(cfg.seen_policy, ds)
    n_neg = cfg.resolved_negatives(ds.n_items)
    state = torch.load(part / "state.pt", weights_only=False) if resume else None
    if state is not None and model_cfg.uses_text:
        E_text = state["model"]["E_text"]
    model = build_model(model_cfg, seed=cfg.seed, E_text=E_text)
    model.set_unseen(ds.train_counts())  # before training: unseen items are never negatives (see the loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed)  # dropout and negative sampling; one seed per entry point
    start_epoch, best, history, elapsed = 0, {"epoch": -1, "NDCG@10": -1.0}, [], 0.0
    lr_scale, last_decay = 1.0, -1
    if state is not None:
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
            **({"text": record["text"]} if "text" in record else {}),
        })
        write_json(part / "argv.json", record.get("argv", []))
        counts = ds.train_counts()
        pd.DataFrame({"index": np.arange(ds.d_vocab), "item_id": ds.item_ids, "title": ds.titles,
                      "train_count": counts}).to_csv(part / "vocab.tsv", sep="\t", index=False)

    inputs, targets, input_times = (torch.from_numpy(a) for a in ds.train_windows(model_cfg.n_ctx))
    lengths = (targets != 0).sum(1).numpy()
    valid = ds.eval_split("valid", model_cfg.n_ctx)
    log_q = negative_log_q(ds, cfg.sampling) if n_neg else None
    steps_per_epoch = len(length_batches(lengths, cfg.batch_size, np.random.default_rng(0)))
    step = start_epoch * steps_per_epoch
    model.train()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train L{model_cfg.n_layers}", unit="epoch",
               disable=not progress, initial=start_epoch, total=cfg.epochs)
    stopped_by = "epochs"
    for epoch in bar:
        t0 = time.perf_counter()
        total, n_batches = 0.0, 0
        for idx in length_batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch])):
            for g in optimizer.param_groups:
                g["lr"] = learning_rate(cfg.lr, step, cfg.warmup_steps, lr_scale)
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
        if decay_due(epoch, best["epoch"], last_decay, cfg.decay_patience):
            lr_scale, last_decay = lr_scale * cfg.decay_factor, epoch
        pd.DataFrame(history).to_csv(part / "epochs.csv", index=False)
        save_state(part / "state.pt", model, optimizer, epoch, best, history, elapsed,
                   lr_scale=lr_scale, last_decay=last_decay)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{m['NDCG@10']:.4f}", best=f"{best['NDCG@10']:.4f}")
        reason = stop_reason(epoch, best["epoch"], cfg.patience, elapsed, cfg.max_minutes)
        if reason:
            stopped_by = reason
            break
    bar.close()
    _take_snapshots(part, cfg.snapshot_minutes, elapsed, final=True)

    model.load_state_dict(load_file(str(part / "model.safetensors")))
    model.eval()
    metrics = evaluate_model(model, ds, model_cfg.n_ctx, emb_mean_k=cfg.emb_mean_k)
    metrics["training"] = {"best_epoch": best["epoch"], "epochs_run": len(history), "stopped_by": stopped_by,
                           "minutes": elapsed / 60, "selection": f"valid full/{policy} NDCG@10"}
    write_json(part / "metrics.json", metrics)
    finish(run_dir)
    return run_dir
