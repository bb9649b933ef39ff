"""Benchmark: one training step (forward, backward, AdamW) with the hand-written gradients against plain autograd.

    python benchmarks/training_step.py RUN [--steps 20] [--repeat 3] [--threads 2]

The step of a run's configuration on its own data and batches (`circuits.training`), two ways, alternating in one
process (autograd, hand-written, autograd, … on the same batches) so drifting machine load hits both alike:

    autograd       F.cross_entropy of the masked N × d_vocab logits; the time-gap scores by indexing W_time[:, bucket]
                   (the loss and scores of 0.5 and earlier)
    hand-written   circuits.training.loss.full_softmax_cross_entropy (blocks of rows, log-sum-exp kept, logits
                   recomputed in backward) and circuits.model.bucket_scores (weight gradient by bincount)

Prints the median seconds per step of each, the ratio, and the largest difference of the losses and of the
gradients between the two on one batch (float rounding only). Only full-softmax runs (`--negatives 0`, the default
up to 10,000 items) use the blocked loss; the time-gap scores need a run with time buckets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run directory whose configuration and data are used (its weights are the start)")
    ap.add_argument("--steps", type=int, default=20, help="steps per round (default 20)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of both (default 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    import circuits.model as model_module
    import circuits.training.loss as loss_module
    from circuits.config import TrainConfig
    from circuits.runs import load_run
    from circuits.training.distributed import Ranks
    from circuits.training.loop import Optimizers, StepLoss, _step_loss
    from circuits.training.schedule import epoch_batches

    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run)
    ds, mc = run.dataset(), run.model_config
    cfg = TrainConfig.from_dict(run.config["train"])  # as --resume reads it: older runs with their own behaviour
    n_neg = run.config["train"]["resolved_negatives"]
    exclude_history = run.config["train"].get("resolved_loss_seen", "included") == "excluded"
    windows = ds.train_window_rows(mc.n_ctx, cfg.windows)
    batches = epoch_batches(windows[2], cfg.batch_size, cfg.seed, 0, 0)[: args.steps]
    ranks = Ranks(device=torch.device("cpu"))
    model = run.model.train()
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def autograd_cross_entropy(r, W_U, y, excluded, history=None):
        logits = r @ W_U
        logits[:, excluded] = float("-inf")
        if history is not None:
            logits = logits.scatter(1, history, float("-inf"))
        return F.cross_entropy(logits, y, reduction="sum")

    @contextmanager
    def autograd_step():
        saved = loss_module.full_softmax_cross_entropy, model_module.bucket_scores
        loss_module.full_softmax_cross_entropy = autograd_cross_entropy
        model_module.bucket_scores = lambda W, bucket: W[:, bucket]
        try:
            yield
        finally:
            loss_module.full_softmax_cross_entropy, model_module.bucket_scores = saved

    def run_steps(idx_list, optimizer):
        for idx in idx_list:
            loss = _step_loss(step_loss, ds, mc, windows, idx, ranks, n_neg, log_q, None, exclude_history)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    log_q = loss_module.negative_log_q(ds, cfg.sampling) if n_neg else None
    step_loss = StepLoss(model, False)

    # agreement on one batch, dropout off, from the run's weights
    model.eval()
    grads = {}
    for name in ("autograd", "hand-written"):
        model.zero_grad(set_to_none=True)
        with autograd_step() if name == "autograd" else nullcontext():
            torch.manual_seed(0)
            loss = _step_loss(step_loss, ds, mc, windows, batches[0], ranks, n_neg, log_q, None, exclude_history)
            loss.backward()
        grads[name] = (loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    model.train()
    loss_diff = abs(float(grads["autograd"][0] - grads["hand-written"][0]))
    reference, fast = grads["autograd"][1], grads["hand-written"][1]
    grad_diff = max(float((reference[k] - fast[k]).abs().max()) for k in reference)
    grad_scale = max(float(g.abs().max()) for g in grads["autograd"][1].values())

    times: dict[str, list[float]] = {"autograd": [], "hand-written": []}
    for _ in range(args.repeat):
        for name in times:
            model.load_state_dict(start)
            optimizer = Optimizers(step_loss, cfg)
            with autograd_step() if name == "autograd" else nullcontext():
                run_steps(batches[:2], optimizer)  # warm-up
                t = time.perf_counter()
                run_steps(batches[2:], optimizer)
                times[name].append((time.perf_counter() - t) / max(len(batches) - 2, 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"run {args.run}: {mc.d_vocab - 1:,} items, n_ctx {mc.n_ctx}, batch {cfg.batch_size}, negatives {n_neg}, "
          f"time buckets {mc.time_buckets}, {torch.get_num_threads()} threads, {len(batches) - 2} steps, "
          f"median of {args.repeat}")
    print("| step | s per step |")
    print("|---|---|")
    for name in times:
        print(f"| {name} | {med[name]:.3f} |")
    print(f"hand-written / autograd: {med['hand-written'] / med['autograd']:.3f}")
    print(f"one batch: |Δ loss| {loss_diff:.2e}, max |Δ gradient| {grad_diff:.2e} (largest gradient {grad_scale:.2e})")


if __name__ == "__main__":
    main()
