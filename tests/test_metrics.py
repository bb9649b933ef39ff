import math

import numpy as np
import pandas as pd
import torch

from circuits.data.sequences import build_dataset
from circuits.scoring.baselines import baseline_scorer
from circuits.scoring.metrics import KS, evaluate_split, metrics_from_ranks, rank_of_target, sample_negatives


def tiny_dataset(seed=0, n_users=30, n_items=25, repeats=True):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        length = rng.integers(3, 12)
        items = rng.choice(n_items, size=length, replace=repeats)
        rows += [(f"u{u}", f"i{i}", t) for t, i in enumerate(items)]
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": float})
    return build_dataset(df, {}, "tiny")


def per_user_reference(scores: np.ndarray, split, policy: str) -> dict[str, float]:
    """Plain loops: rank with pessimistic ties, optional exclusion of history items."""
    ranks = []
    for r in range(len(split)):
        s = scores[r].astype(float).copy()
        s[0] = -math.inf
        target = split.target[r]
        if policy == "excluded":
            for i in split.seen_items[split.seen_ptr[r] : split.seen_ptr[r + 1]]:
                s[i] = -math.inf
        t = s[target]
        ranks.append(1 + sum(1 for j in range(len(s)) if j != target and s[j] >= t))
    out = {}
    for k in KS:
        out[f"HR@{k}"] = np.mean([1.0 if r <= k else 0.0 for r in ranks])
        out[f"NDCG@{k}"] = np.mean([1 / math.log2(r + 1) if r <= k else 0.0 for r in ranks])
        out[f"MRR@{k}"] = np.mean([1 / r if r <= k else 0.0 for r in ranks])
    return out


def test_full_ranking_metrics_match_per_user_loop():
    ds = tiny_dataset()
    split = ds.eval_split("test", n_ctx=6)
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(len(split), ds.d_vocab)).astype(np.float32)  # many ties on purpose
    got = evaluate_split(lambda h, rows: torch.from_numpy(scores[rows]), split, ds.d_vocab, n_sampled=0, batch_size=7)
    for policy in ("excluded", "included"):
        want = per_user_reference(scores, split, policy)
        for k, v in want.items():
            assert abs(got[f"full/{policy}"][k] - v) < 1e-9, (policy, k)


def test_sampled_negatives_are_untouched_distinct_and_seeded():
    ds = tiny_dataset(n_items=200)
    split = ds.eval_split("valid", n_ctx=6)
    neg = sample_negatives(split, ds.d_vocab, n=100, seed=3)
    assert neg.shape == (len(split), 100)
    for r in range(len(split)):
        touched = set(split.touched_items[split.touched_ptr[r] : split.touched_ptr[r + 1]].tolist())
        assert len(set(neg[r].tolist())) == 100 and not touched & set(neg[r].tolist()) and 0 not in neg[r]
    assert np.array_equal(neg, sample_negatives(split, ds.d_vocab, n=100, seed=3))
    assert not np.array_equal(neg, sample_negatives(split, ds.d_vocab, n=100, seed=4))


def test_pessimistic_ties_and_metric_formulas():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5]])
    assert rank_of_target(scores, torch.tensor([1])).item() == 3
    m = metrics_from_ranks(np.array([1, 3, 30]))
    assert math.isclose(m["HR@10"], 2 / 3)
    assert math.isclose(m["NDCG@10"], (1 + 1 / math.log2(4)) / 3)
    assert math.isclose(m["MRR@5"], (1 + 1 / 3) / 3)


def test_markov_baseline_matches_dense_counts():
    ds = tiny_dataset(seed=5)
    split = ds.eval_split("test", n_ctx=5)
    counts = np.zeros((ds.d_vocab, ds.d_vocab))
    for s in ds.train_sequences():
        for a, b in zip(s[:-1], s[1:]):
            counts[a, b] += 1
    got = baseline_scorer("markov", ds)(torch.from_numpy(split.history), np.arange(len(split))).numpy()
    want = counts[split.history[:, -1]]
    assert np.all(np.floor(got) == want)  # the fractional part is only the popularity tie-break
    pop = ds.train_counts()
    frac = got - want
    assert np.all(frac < 1) and np.array_equal(np.argsort(frac[0], kind="stable"), np.argsort(pop, kind="stable"))


def test_repeat_baseline_puts_last_item_first():
    ds = tiny_dataset(seed=6)
    split = ds.eval_split("test", n_ctx=5)
    scores = baseline_scorer("repeat", ds)(torch.from_numpy(split.history), np.arange(len(split)))
    assert torch.equal(scores.argmax(1), torch.from_numpy(split.history[:, -1]))


def test_sampled_protocol_uses_every_untouched_item_when_there_are_fewer_than_100():
    ds = tiny_dataset(n_items=25)
    split = ds.eval_split("test", n_ctx=6)
    neg = sample_negatives(split, ds.d_vocab, n=100, seed=0)
    for r in range(len(split)):
        touched = split.touched_items[split.touched_ptr[r] : split.touched_ptr[r + 1]]
        real = neg[r][neg[r] > 0]
        assert sorted(real.tolist()) == sorted(set(range(1, ds.d_vocab)) - set(touched.tolist()))
    ranks = evaluate_split(lambda h, rows: torch.zeros(len(rows), ds.d_vocab), split, ds.d_vocab, n_sampled=100)
    # constant scores: pessimistic ties put the target behind every real candidate, never behind padding
    expected = [1 + (neg[r] > 0).sum() for r in range(len(split))]
    assert abs(ranks["sampled"]["HR@20"] - np.mean([e <= 20 for e in expected])) < 1e-12
