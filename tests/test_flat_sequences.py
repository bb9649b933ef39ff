"""The flat-array dataset: evaluation splits and training batches gathered without per-user loops (against the
obvious per-user loops they replaced), user samples, and the memory-mapped cache."""

import numpy as np
import pandas as pd
import pytest

from circuits.data.cache import load_dataset_file, load_log_dataset, save_dataset
from circuits.data.sequences import (
    EvalSplit,
    Preprocess,
    build_dataset,
    sample_eval_users,
)


def _random_dataset(seed: int = 0, n_users: int = 60, n_items: int = 25):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, 15))  # some users with 1–2 interactions: training-only
        for k in range(n):
            rows.append((f"u{u}", str(int(rng.integers(1, n_items))), float(k // 2)))  # ties in time, repeats
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return build_dataset(df, {}, "random")


def _reference_split(ds, split: str, n_ctx: int) -> EvalSplit:
    """The per-user loop (the implementation before the flat one)."""
    back = 2 if split == "valid" else 1
    users = np.flatnonzero(ds.lengths >= 3)
    history = np.zeros((len(users), n_ctx), dtype=np.int64)
    times = np.zeros((len(users), n_ctx))
    target = np.empty(len(users), dtype=np.int64)
    seen, touched = [], []
    for r, u in enumerate(users):
        full = ds.items[ds.offsets[u] : ds.offsets[u + 1]]
        h = full[: len(full) - back]
        target[r] = full[len(full) - back]
        w = h[-n_ctx:]
        history[r, n_ctx - len(w) :] = w
        end = ds.offsets[u] + len(h)
        times[r, n_ctx - len(w) :] = ds.timestamps[end - len(w) : end]
        seen.append(np.unique(h))
        touched.append(np.unique(full))

    def csr(lists):
        ptr = np.r_[0, np.cumsum([len(x) for x in lists])]
        return ptr, np.concatenate(lists).astype(np.int64)

    return EvalSplit(split, users, history, target, times, *csr(seen), *csr(touched))


FIELDS = ("users", "history", "target", "history_times", "seen_ptr", "seen_items", "touched_ptr", "touched_items")


@pytest.mark.parametrize("n_ctx", [1, 3, 20])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_split_equals_the_per_user_loop(split, n_ctx):
    ds = _random_dataset()
    got, want = ds.eval_split(split, n_ctx), _reference_split(ds, split, n_ctx)
    for f in FIELDS:
        a, b = getattr(got, f), getattr(want, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)


def test_a_user_sample_is_seeded_and_its_split_is_those_rows_of_the_whole_split():
    ds = _random_dataset(1, n_users=200)
    eligible = ds.eval_users()
    sample = sample_eval_users(ds, 30, seed=4)
    np.testing.assert_array_equal(sample, sample_eval_users(ds, 30, seed=4))
    assert not np.array_equal(sample, sample_eval_users(ds, 30, seed=5))
    assert len(np.unique(sample)) == 30 and np.isin(sample, eligible).all() and (np.diff(sample) > 0).all()
    assert sample_eval_users(ds, 0) is None and sample_eval_users(ds, len(eligible)) is None
    whole, part = ds.eval_split("test", 6), ds.eval_split("test", 6, users=sample)
    rows = np.searchsorted(whole.users, sample)
    expected = whole.subset(rows, "test")
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(part, f), getattr(expected, f), err_msg=f)


def test_subset_keeps_each_rows_lists():
    ds = _random_dataset(2)
    split = ds.eval_split("valid", 4)
    rows = np.array([3, 0, 3, 7])
    sub = split.subset(rows, "s")
    for r, row in enumerate(rows):
        a = sub.seen_items[sub.seen_ptr[r] : sub.seen_ptr[r + 1]]
        np.testing.assert_array_equal(a, split.seen_items[split.seen_ptr[row] : split.seen_ptr[row + 1]])
        b = sub.touched_items[sub.touched_ptr[r] : sub.touched_ptr[r + 1]]
        np.testing.assert_array_equal(b, split.touched_items[split.touched_ptr[row] : split.touched_ptr[row + 1]])


def test_train_batches_are_the_right_edge_of_the_windows():
    ds = _random_dataset(3)
    n_ctx = 5
    inputs, targets, times = ds.train_windows(n_ctx)
    users, lengths = ds.train_users(n_ctx)
    assert len(users) == len(inputs)
    np.testing.assert_array_equal(lengths, (targets != 0).sum(1))
    # the obvious construction, user by user
    for r, u in enumerate(users):
        part = ds.items[ds.offsets[u] : ds.offsets[u] + ds.train_lengths()[u]]
        x, y = part[:-1][-n_ctx:], part[1:][-n_ctx:]
        np.testing.assert_array_equal(inputs[r, n_ctx - len(x) :], x)
        np.testing.assert_array_equal(targets[r, n_ctx - len(y) :], y)
        assert (inputs[r, : n_ctx - len(x)] == 0).all()
    rows = np.array([4, 1, 2])
    width = int(lengths[rows].max())
    for got, full in zip(ds.train_batch(users[rows], width), (inputs, targets, times)):
        np.testing.assert_array_equal(got, full[rows, -width:])


def test_all_windows_cover_every_training_target_once_back_to_back():
    """`windows="all"`: each user's training part cut, from its end, into windows of n_ctx targets; against the
    obvious construction, user by user (`last` is the first window of each user)."""
    ds = _random_dataset(3)
    n_ctx = 4
    users, back, lengths = ds.train_window_rows(n_ctx, "all")
    x, y, t = ds.train_batch(users, n_ctx, back)
    expected = []
    for u in ds.train_users(n_ctx)[0]:
        part = ds.items[ds.offsets[u] : ds.offsets[u] + ds.train_lengths()[u]]
        part_t = ds.timestamps[ds.offsets[u] : ds.offsets[u] + ds.train_lengths()[u]]
        inputs, targets, times = part[:-1], part[1:], part_t[:-1]
        for end in range(len(targets), 0, -n_ctx):  # latest window first
            lo = max(0, end - n_ctx)
            expected.append((u, inputs[lo:end], targets[lo:end], times[lo:end]))
    assert len(expected) == len(users) > len(ds.train_users(n_ctx)[0])  # some users have earlier windows
    for r, (u, xi, yi, ti) in enumerate(expected):
        assert users[r] == u and lengths[r] == len(yi)
        np.testing.assert_array_equal(x[r, n_ctx - len(xi) :], xi)
        np.testing.assert_array_equal(y[r, n_ctx - len(yi) :], yi)
        np.testing.assert_array_equal(t[r, n_ctx - len(ti) :], ti)
        assert (y[r, : n_ctx - len(yi)] == 0).all()
    all_targets = np.sort(y[y != 0])
    per_user = [ds.items[ds.offsets[u] + 1 : ds.offsets[u] + ds.train_lengths()[u]] for u in ds.train_users(n_ctx)[0]]
    np.testing.assert_array_equal(all_targets, np.sort(np.concatenate(per_user)))  # every target exactly once
    last_users, last_back, last_lengths = ds.train_window_rows(n_ctx, "last")
    first = back == 0
    np.testing.assert_array_equal(users[first], last_users)
    np.testing.assert_array_equal(lengths[first], last_lengths)
    assert (last_back == 0).all()


def test_the_cache_entry_is_memory_mapped_and_the_same_dataset(tmp_path):
    ds = _random_dataset(4)
    save_dataset(ds, tmp_path / "entry")
    back = load_dataset_file(tmp_path / "entry")
    assert isinstance(back.items, np.memmap) and isinstance(back.offsets, np.memmap)
    assert back.fingerprint == ds.fingerprint and back.name == ds.name and back.info == ds.info
    np.testing.assert_array_equal(back.item_ids, ds.item_ids)
    np.testing.assert_array_equal(back.user_ids, ds.user_ids)
    np.testing.assert_array_equal(back.titles, ds.titles)
    assert not (tmp_path / "entry.tmp").exists()


def test_a_log_read_twice_comes_from_the_cache(tmp_path):
    from circuits.data.readers import LogSpec

    log = tmp_path / "log.csv"
    pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "b"], "item_id": ["1", "2", "3", "3", "2", "1"],
                  "timestamp": [1, 2, 3, 1, 2, 3]}).to_csv(log, index=False)
    first = load_log_dataset(LogSpec(str(log)), Preprocess(), engine="pandas")
    second = load_log_dataset(LogSpec(str(log)), Preprocess(), engine="pandas")
    assert isinstance(second.items, np.memmap) and second.fingerprint == first.fingerprint
