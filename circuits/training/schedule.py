"""The training rules as pure functions: learning rate, plateau decay, stopping, batch order.

Kept out of the loop so each can be tested (and plotted) on its own.
"""

from __future__ import annotations

import math

import numpy as np


def learning_rate(base_lr: float, step: int, warmup_steps: int, scale: float = 1.0) -> float:
    """Linear warm-up over the first `warmup_steps` steps, times the plateau scale."""
    return base_lr * scale * min(1.0, (step + 1) / max(warmup_steps, 1))


def floor_scale(base_lr: float, min_lr: float) -> float:
    """The smallest lr factor a schedule may reach: min_lr / base_lr, at most 1 (a base rate under the floor is
    never raised), 0 for a zero base rate."""
    return min(1.0, min_lr / base_lr) if base_lr > 0 else 0.0


def training_progress(elapsed_s: float, max_minutes: float, step: int, total_steps: int) -> float:
    """How far a cosine-scheduled run is, 0 → 1: the share of the time budget spent, or without one the share of
    the steps of `--epochs` done."""
    if max_minutes > 0:
        return min(1.0, elapsed_s / (max_minutes * 60))
    return min(1.0, step / max(total_steps, 1))


def cosine_scale(progress: float, base_lr: float, min_lr: float) -> float:
    """The lr factor of cosine annealing: 1 at progress 0, min_lr / base_lr at 1 (half a cosine between; a
    base rate under the floor stays as it is)."""
    floor = floor_scale(base_lr, min_lr)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def is_improvement(value: float, reference: float, min_delta: float) -> bool:
    """Does a validation score count as progress for patience and decay: better than `reference` (the score of
    the last epoch that counted) by more than `min_delta`? (The best weights are kept on any gain; only the
    clocks of patience and decay need a real one, so noise-level gains do not keep a run going.)"""
    return value > reference + min_delta


def decayed_scale(scale: float, factor: float, base_lr: float, min_lr: float) -> float:
    """The plateau scale after one decay, floored so that the learning rate stays ≥ `min_lr` (or stays where it
    is if it already is below: a base rate under the floor is never raised)."""
    return max(scale * factor, min(scale, floor_scale(base_lr, min_lr)))


def decay_due(epoch: int, best_epoch: int, last_decay: int, patience: int) -> bool:
    """After `epoch`: is the learning rate multiplied by the decay factor? Yes once `patience` epochs have
    passed without a better validation score, counted from the best epoch or from the last decay, whichever
    is later (`patience` 0: never)."""
    return patience > 0 and epoch - max(best_epoch, last_decay) >= patience


def stop_reason(epoch: int, best_epoch: int, patience: int, elapsed_s: float, max_minutes: float) -> str | None:
    """After `epoch`: 'patience' (no better validation score for `patience` epochs), 'time limit', or None."""
    if epoch - best_epoch >= patience:
        return "patience"
    if max_minutes and elapsed_s >= max_minutes * 60:
        return "time limit"
    return None


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of sequences of similar length, so padding columns can be cut off.

    Sequences are sorted by length with a random tie order, cut into consecutive batches, and the batch
    order is shuffled: every sequence appears once per epoch; only which ones share a batch is constrained.
    """
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, steps_per_epoch: int = 0
                  ) -> list[np.ndarray]:
    """The batches (index arrays into `lengths`) of one epoch.

    `steps_per_epoch` 0: an epoch is one pass, `length_batches` seeded by (seed, epoch). Otherwise an epoch is
    the global steps [epoch·N, (epoch + 1)·N) of a stream of passes, pass p being `length_batches` seeded by
    (seed, p): validation every N steps on data too large to wait for a pass, and still every sequence once per
    pass."""
    if steps_per_epoch == 0:
        return length_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))
    per_pass = -(-len(lengths) // batch_size)
    out: list[np.ndarray] = []
    step, stop = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch
    while step < stop:
        p = step // per_pass
        batches = length_batches(lengths, batch_size, np.random.default_rng([seed, p]))
        take = min(stop, (p + 1) * per_pass) - step
        out += batches[step - p * per_pass : step - p * per_pass + take]
        step += take
    return out
