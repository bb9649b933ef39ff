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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from circuits.config import ModelConfig, TrainConfig
from circuits.data.sequences import EvalSplit, SequenceDataset, sample_eval_users
from circuits.errors import UserError
from circuits.interp.last_position import model_ranks
from circuits.model import AttnOnlyTransformer, build_model
from circuits.runs import finish, partial_dir, save_state, save_weights, write_json
from circuits.scoring.evaluator import evaluate_model, resolve_seen_policy
from circuits.scoring.metrics import metrics_from_ranks
from circuits.training.distributed import Ranks
from circuits.training.loss import negative_log_q, next_item_loss
from circuits.training.schedule import (
    cosine_scale,
    decay_due,
    decayed_scale,
    epoch_batches,
    is_improvement,
    learning_rate,
    length_batches,
    stop_reason,
    training_progress,
)


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
def validate(model: AttnOnlyTransformer, split: EvalSplit, policy: str) -> dict[str, float]:
    """Full-ranking metrics of `split` under `policy`, from the user vectors alone (`model_ranks`: histories in
    batches of similar length, the last layer at the last query; equal to `evaluate_split` of `model_scorer` to
    float rounding, tested; 0.23 of its time on ML-1M, benchmarks/validation_speed.py)."""
    was_training = model.training
    model.eval()
    ranks = model_ranks(model, split)["intact"][f"full/{policy}"]
    model.train(was_training)
    return metrics_from_ranks(ranks)


class StepLoss(torch.nn.Module):
    """One step's loss as a module, so DistributedDataParallel (which hooks `forward`) can wrap it.

    `sparse`: the id item tables get row-sparse gradients (`TrainConfig.sparse_items`): W_E and an untied id W_U
    are trained as row-major copies, `nn.Embedding(sparse=True)` tables registered here (the model's own W_E / W_U
    frozen meanwhile, and given back their values by `sync` before every validation and checkpoint). Embedding
    modules, because that is how DistributedDataParallel knows to expect sparse gradients."""

    def __init__(self, model: AttnOnlyTransformer, sparse: bool = False):
        super().__init__()
        self.model = model
        if sparse and model.cfg.embed_side == "id":
            self.embed_table = torch.nn.Embedding.from_pretrained(model.W_E.detach().clone(), freeze=False,
                                                                  sparse=True)
            object.__setattr__(model, "embed_rows", self.embed_table.weight)
            model.W_E.requires_grad_(False)
        if sparse and model.cfg.unembed_side == "id" and not model.cfg.tied:
            self.unembed_table = torch.nn.Embedding.from_pretrained(model.W_U.detach().T.contiguous(), freeze=False,
                                                                    sparse=True)
            object.__setattr__(model, "unembed_rows", self.unembed_table.weight)
            model.W_U.requires_grad_(False)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return next_item_loss(self.model, *args, **kwargs)

    @property
    def sparse_tables(self) -> list[torch.nn.Parameter]:
        return [getattr(self, n).weight for n in ("embed_table", "unembed_table") if hasattr(self, n)]

    @torch.no_grad()
    def sync(self) -> None:
        if hasattr(self, "embed_table"):
            self.model.W_E.copy_(self.embed_table.weight)
        if hasattr(self, "unembed_table"):
            self.model.W_U.copy_(self.unembed_table.weight.T)

    def release(self) -> None:
        """Back to an ordinary model (the copies' values in W_E / W_U, dense gradients)."""
        self.sync()
        for attr, name in (("embed_rows", "W_E"), ("unembed_rows", "W_U")):
            if getattr(self.model, attr) is not None:
                object.__setattr__(self.model, attr, None)
                self.model._parameters[name].requires_grad_(True)


class Optimizers:
    """AdamW for the dense parameters and, with sparse item tables, SparseAdam (lazy Adam) for W_E and the row-major
    unembedding: stepped, zeroed, saved and restored as one optimiser."""

    def __init__(self, step_loss: StepLoss, cfg: TrainConfig):
        params = [p for p in step_loss.parameters() if p.requires_grad]
        sparse_ids = {id(p) for p in step_loss.sparse_tables}
        dense = [p for p in params if id(p) not in sparse_ids]
        sparse = [p for p in params if id(p) in sparse_ids]
        self.all = [torch.optim.AdamW(dense, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)]
        if sparse:
            self.all.append(torch.optim.SparseAdam(sparse, lr=cfg.lr, betas=(0.9, 0.98)))

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.all for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.all:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.all:
            o.step()

    def state_dict(self) -> dict:
        # one optimiser: AdamW's own state dict (what runs before 0.4 saved); two: both, by position
        return self.all[0].state_dict() if len(self.all) == 1 else {"optimizers": [o.state_dict() for o in self.all]}

    def load_state_dict(self, state: dict) -> None:
        states = state["optimizers"] if "optimizers" in state else [state]
        if len(states) != len(self.all):
            raise UserError("the saved optimiser state does not match this run's (dense / sparse item tables)")
        for o, st in zip(self.all, states):
            o.load_state_dict(st)


def train(
    ds: SequenceDataset,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    run_dir: Path,
    record: dict,
    resume: bool = False,
    progress: bool = True,
    E_text: torch.Tensor | None = None,
    ranks: Ranks | None = None,
) -> Path:
    """Train into `run_dir` (via `run_dir.partial`); return `run_dir` once complete.

    `record` is what config.json stores about the data (`record["data"]`: source and options, see
    `circuits.runs.data_record`), the command (`record["argv"]`) and, for text sides, the embeddings
    (`record["text"]`). `E_text` [d_vocab, d_text]: the items' text embeddings of a text or hybrid model (on
    resume they come back from the saved state). `ranks`: this process's place under torchrun (see
    `circuits.training.distributed`; default one process): every rank trains on its share of each global batch,
    rank 0 alone validates and writes.
    """
    ranks = ranks or Ranks(device=torch.device(cfg.device))
    main = ranks.is_main
    run_dir = Path(run_dir)
    part = partial_dir(run_dir)
    policy = resolve_seen_policy(cfg.seen_policy, ds)
    n_neg = cfg.resolved_negatives(ds.n_items)
    loss_seen = cfg.resolved_loss_seen(policy, ds.n_items)
    if loss_seen == "excluded" and (n_neg or cfg.in_batch):
        raise UserError(f"--loss-seen excluded needs a full softmax ({n_neg} sampled negatives here: --negatives 0, "
                        "no --in-batch-negatives)")
    state = torch.load(part / "state.pt", weights_only=False, map_location="cpu") if resume else None
    if state is not None and model_cfg.uses_text:
        E_text = state["model"]["E_text"]
    model = build_model(model_cfg, seed=cfg.seed, E_text=E_text)
    model.set_unseen(ds.train_counts())  # before training: unseen items are never negatives (see the loss)
    torch.manual_seed(cfg.seed)  # dropout and negative sampling; one seed per entry point
    # best: the kept weights' epoch and score (any gain); progress: the last epoch whose gain was ≥ min_delta, from
    # which patience and decay count
    start_epoch, best, history, elapsed = 0, {"epoch": -1, "NDCG@10": -1.0}, [], 0.0
    progress_at, lr_scale, last_decay = dict(best), 1.0, -1
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(ranks.device)
    sparse = cfg.resolved_sparse(ds.n_items, model_cfg)
    if cfg.ema and sparse:
        raise UserError("--ema needs dense item tables (--sparse-items off): with row-sparse gradients W_E and W_U "
                        "are trained in copies that the average does not see")
    # the weights that are validated, kept and evaluated: the model's own, or their running average (--ema)
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) if cfg.ema else None
    if state is not None and average is not None:
        average.load_state_dict(state["average"])
    kept = average.module if average is not None else model
    step_loss = StepLoss(model, sparse)
    optimizer = Optimizers(step_loss, cfg)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history, elapsed = state["epoch"] + 1, state["best"], state["history"], state["elapsed"]
        lr_scale, last_decay = state["lr_scale"], state["last_decay"]
        progress_at = state.get("progress_at", best)  # states written before 0.5 counted every gain
    elif main:
        part.mkdir(parents=True)
        write_json(part / "config.json", {
            "model": model_cfg.to_dict(),
            "train": {**asdict(cfg), "resolved_negatives": n_neg, "resolved_seen_policy": policy,
                      "resolved_loss_seen": loss_seen,
                      "resolved_sparse_items": sparse, "processes": ranks.world},
            "data": {**record["data"], "fingerprint": ds.fingerprint, "summary": ds.summary()},
            **({"text": record["text"]} if "text" in record else {}),
        })
        write_json(part / "argv.json", record.get("argv", []))
        counts = ds.train_counts()
        pd.DataFrame({"index": np.arange(ds.d_vocab), "item_id": ds.item_ids, "title": ds.titles,
                      "train_count": counts}).to_csv(part / "vocab.tsv", sep="\t", index=False)
    ranks.barrier()

    # the training windows (a user, how far before the end of its training part, its number of targets): batches
    # are gathered from the flat arrays step by step
    users, backs, lengths = ds.train_window_rows(model_cfg.n_ctx, cfg.windows)
    eval_users = sample_eval_users(ds, cfg.eval_users, cfg.eval_seed)
    valid = ds.eval_split("valid", model_cfg.n_ctx, users=eval_users) if main else None
    device = ranks.device
    log_q = negative_log_q(ds, cfg.sampling).to(device) if n_neg else None
    pop_log_q = negative_log_q(ds, "popularity").to(device) if cfg.in_batch else None
    trainer = step_loss
    if ranks.distributed:  # buffers (text vectors, unseen items) never change: no broadcast at every step
        trainer = torch.nn.parallel.DistributedDataParallel(step_loss, broadcast_buffers=False)
    steps_per_epoch = cfg.steps_per_epoch or len(length_batches(lengths, cfg.batch_size, np.random.default_rng(0)))
    step = start_epoch * steps_per_epoch
    # cosine under a budget: the clock at each step is estimated from the elapsed time at the epoch's start and the
    # last epoch's seconds per step (figures every rank got from rank 0), so all ranks take the same lr
    cosine = cfg.schedule == "cosine"
    seconds_per_step = 0.0
    model.train()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train L{model_cfg.n_layers}", unit="epoch",
               disable=not (progress and main), initial=start_epoch, total=cfg.epochs)
    stopped_by = "epochs"
    for epoch in bar:
        t0 = time.perf_counter()
        total, n_batches = 0.0, 0
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.steps_per_epoch)
        steps = tqdm(batches, desc=f"epoch {epoch}", unit="step", leave=False,
                     disable=not (progress and main) or len(batches) < 500)
        for i, idx in enumerate(steps):
            if cosine:
                lr_scale = cosine_scale(training_progress(elapsed + i * seconds_per_step, cfg.max_minutes, step,
                                                          cfg.epochs * steps_per_epoch), cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = learning_rate(cfg.lr, step, cfg.warmup_steps, lr_scale)
            loss = _step_loss(trainer, ds, model_cfg, (users, backs, lengths), idx, ranks, n_neg, log_q, pop_log_q,
                              loss_seen == "excluded")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update_parameters(model)
            total, n_batches, step = total + loss.item(), n_batches + 1, step + 1
        step_seconds = time.perf_counter() - t0
        step_loss.sync()
        # rank 0 validates and times; every rank takes the same decisions from its figures
        epoch_start = elapsed
        m, elapsed, step_seconds = ranks.broadcast((validate(kept, valid, policy) if main else None,
                                                    elapsed + time.perf_counter() - t0, step_seconds))
        seconds_per_step = (elapsed - epoch_start) / max(n_batches, 1)
        row = {"epoch": epoch, "loss": ranks.sum(total) / ranks.world / n_batches, "minutes": elapsed / 60,
               "lr": cfg.lr * lr_scale, **{f"valid_{k}": v for k, v in m.items() if k.endswith("@10")},
               "steps": n_batches, "step_seconds": step_seconds}
        history.append(row)
        if main:
            _take_snapshots(part, cfg.snapshot_minutes, elapsed, final=False)
        if m["NDCG@10"] > best["NDCG@10"]:
            best = {"epoch": epoch, "NDCG@10": m["NDCG@10"]}
            if main:
                save_weights(kept, part / "model.safetensors")
        if is_improvement(m["NDCG@10"], progress_at["NDCG@10"], cfg.min_delta):
            progress_at = {"epoch": epoch, "NDCG@10": m["NDCG@10"]}
        if not cosine and decay_due(epoch, progress_at["epoch"], last_decay, cfg.decay_patience):
            lr_scale = decayed_scale(lr_scale, cfg.decay_factor, cfg.lr, cfg.min_lr)
            last_decay = epoch
        if main:
            pd.DataFrame(history).to_csv(part / "epochs.csv", index=False)
            save_state(part / "state.pt", model, optimizer, epoch, best, history, elapsed,
                       lr_scale=lr_scale, last_decay=last_decay, progress_at=progress_at,
                       **({"average": average.state_dict()} if average is not None else {}))
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{m['NDCG@10']:.4f}", best=f"{best['NDCG@10']:.4f}")
        reason = stop_reason(epoch, progress_at["epoch"], cfg.patience, elapsed, cfg.max_minutes)
        if reason:
            stopped_by = reason
            break
    bar.close()
    step_loss.release()
    if not main:
        ranks.barrier()  # rank 0 evaluates and publishes the run
        return run_dir
    _take_snapshots(part, cfg.snapshot_minutes, elapsed, final=True)

    model.load_state_dict(load_file(str(part / "model.safetensors"), device=str(device)))
    model.eval()
    metrics = evaluate_model(model, ds, model_cfg.n_ctx, emb_mean_k=cfg.emb_mean_k, users=eval_users,
                             eval_seed=cfg.eval_seed)
    metrics["training"] = {"best_epoch": best["epoch"], "epochs_run": len(history), "stopped_by": stopped_by,
                           "minutes": elapsed / 60, "selection": f"valid full/{policy} NDCG@10",
                           "processes": ranks.world, "device": str(device.type)}
    write_json(part / "metrics.json", metrics)
    finish(run_dir)
    ranks.barrier()
    return run_dir


def _step_loss(step_loss, ds: SequenceDataset, model_cfg: ModelConfig, windows: tuple[np.ndarray, ...],
               idx: np.ndarray, ranks: Ranks, n_neg: int, log_q, pop_log_q,
               exclude_history: bool = False) -> torch.Tensor:
    """The loss of this rank's share of the global batch `idx` (rows of `windows` = (users, backs, lengths),
    `SequenceDataset.train_window_rows`)."""
    users, backs, lengths = windows
    device = ranks.device
    mine = idx[ranks.rank :: ranks.world] if ranks.distributed else idx
    if len(mine):
        width = int(lengths[mine].max())  # the targets' width; strip_left_padding works on inputs only
        x, y, t = (torch.from_numpy(a).to(device) for a in ds.train_batch(users[mine], width, backs[mine]))
    else:  # a last global batch smaller than the number of ranks: no target here, still a (zero) step
        x = y = torch.zeros(1, 1, dtype=torch.long, device=device)
        t = torch.zeros(1, 1, dtype=torch.float64, device=device)
    negatives = in_batch = None
    if n_neg and ranks.distributed:  # one draw (rank 0's) for every rank
        negatives = torch.multinomial(log_q.exp(), n_neg, replacement=True) if ranks.is_main else \
            torch.zeros(n_neg, dtype=torch.long, device=device)
        negatives = ranks.broadcast_tensor(negatives)
    if pop_log_q is not None:  # the distinct targets of the global batch, the same on every rank
        # one process: the batch just gathered is the global one; a rank gathers the others' targets too
        targets = y.cpu().numpy() if not ranks.distributed else \
            ds.train_batch(users[idx], int(lengths[idx].max()), backs[idx])[1]
        in_batch = torch.from_numpy(np.unique(targets))
        in_batch = in_batch[in_batch != 0].to(device)
    normalizer = float(lengths[idx].sum()) / ranks.world if ranks.distributed else None
    return step_loss(x, y, n_neg, log_q, t if model_cfg.uses_time else None, negatives=negatives,
                     in_batch=in_batch, in_batch_log_q=pop_log_q, normalizer=normalizer,
                     exclude_history=exclude_history)
