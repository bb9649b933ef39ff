"""The training rules as pure functions, against hand-worked sequences."""

import numpy as np

from circuits.training.schedule import decay_due, learning_rate, length_batches, stop_reason


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
