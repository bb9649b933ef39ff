"""The training rules as pure functions, against hand-worked sequences."""

import math

import numpy as np
import pytest

from circuits.training.schedule import (
    cosine_scale,
    decay_due,
    decayed_scale,
    is_improvement,
    learning_rate,
    length_batches,
    stop_reason,
    training_progress,
)


def test_warmup_is_linear_then_flat_and_scaled():
    assert [learning_rate(1.0, s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert learning_rate(0.1, 10, 0, scale=0.3) == 0.1 * 0.3


def test_decay_counts_from_the_best_epoch_or_the_last_decay():
    # best at epoch 1, patience 2: decay after epoch 3; then counted from 3: the next one after epoch 5
    fired, last = [], -1
    for epoch in range(7):
        if decay_due(epoch, best_epoch=1, last_decay=last, patience=2):
            fired.append(epoch)
            last = epoch
    assert fired == [3, 5]
    assert not any(decay_due(e, 0, -1, patience=0) for e in range(10))  # 0 = constant lr


def test_only_gains_above_min_delta_count_as_progress():
    # a run creeping up by 5e-5 an epoch: with min_delta 1e-4 only every third epoch's score counts
    scores = [0.1000, 0.10005, 0.1001, 0.10015, 0.1002, 0.10025, 0.1003]
    ref, counted = -1.0, []
    for epoch, v in enumerate(scores):
        if is_improvement(v, ref, 1e-4):
            ref, counted = v, counted + [epoch]
    assert counted == [0, 3, 6]
    assert is_improvement(0.2, 0.1, 0.0) and not is_improvement(0.1, 0.1, 0.0)  # min_delta 0: any gain


def test_decay_stops_at_the_floor_and_never_raises_the_rate():
    scale, lrs = 1.0, []
    for _ in range(5):
        scale = decayed_scale(scale, 0.3, base_lr=5e-3, min_lr=1e-4)
        lrs.append(5e-3 * scale)
    assert np.allclose(lrs, [1.5e-3, 4.5e-4, 1.35e-4, 1e-4, 1e-4])
    assert decayed_scale(1.0, 0.3, base_lr=5e-5, min_lr=1e-4) == 1.0  # base below the floor: stays
    assert decayed_scale(1.0, 0.3, base_lr=5e-3, min_lr=0.0) == 0.3  # no floor


def test_cosine_goes_from_the_base_rate_to_the_floor_through_the_midpoint():
    base, floor = 5e-3, 1e-4
    lrs = [base * cosine_scale(p, base, floor) for p in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, -1.0)]
    mid = (base + floor) / 2
    half = (base - floor) / 2 * math.cos(math.pi / 4)
    assert lrs == pytest.approx([base, mid + half, mid, mid - half, floor, floor, base])
    assert cosine_scale(0.7, base_lr=5e-5, min_lr=1e-4) == 1.0  # base below the floor: stays


def test_progress_is_the_budget_spent_or_the_steps_done():
    assert training_progress(90.0, max_minutes=3, step=5, total_steps=10) == 0.5  # the clock, not the steps
    assert training_progress(400.0, max_minutes=3, step=5, total_steps=10) == 1.0
    assert training_progress(90.0, max_minutes=0, step=5, total_steps=20) == 0.25


def test_stop_reason():
    assert stop_reason(12, best_epoch=2, patience=10, elapsed_s=1.0, max_minutes=0) == "patience"
    assert stop_reason(11, best_epoch=2, patience=10, elapsed_s=1.0, max_minutes=0) is None
    assert stop_reason(3, best_epoch=3, patience=10, elapsed_s=61.0, max_minutes=1) == "time limit"
    assert stop_reason(3, best_epoch=3, patience=10, elapsed_s=59.0, max_minutes=1) is None


def test_length_batches_cover_every_sequence_once_with_similar_lengths():
    lengths = np.array([5, 1, 9, 5, 2, 9, 1, 3])
    batches = length_batches(lengths, 3, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    spans = sorted(int(lengths[b].max() - lengths[b].min()) for b in batches)
    assert spans == sorted(int(np.ptp(np.sort(lengths)[i:i + 3])) for i in (0, 3, 6))
