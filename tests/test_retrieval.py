"""faiss retrieval against the torch evaluator (exact index) and brute-force numpy (approximate indexes)."""

import sys

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("faiss")

from circuits.config import ModelConfig  # noqa: E402
from circuits.data.sequences import build_dataset  # noqa: E402
from circuits.errors import UserError  # noqa: E402
from circuits.model import build_model  # noqa: E402
from circuits.scoring.evaluator import model_scorer  # noqa: E402
from circuits.scoring.metrics import metrics_from_ranks, split_ranks  # noqa: E402
from circuits.scoring.retrieval import (  # noqa: E402
    build_index,
    item_vectors,
    recall_at_k,
    retrieval_ranks,
    retrieval_table,
    user_vectors,
)
from tests.helpers import with_random_distance_weights  # noqa: E402

D_VOCAB, N_CTX = 60, 8


def tiny_split(n_users: int = 80, seed: int = 0):
    """Users of 3–14 interactions drawn with replacement from 59 items: many repeat items, so many targets
    lie in their own history (the `excluded` policy's "target seen = miss" rule), and the histories are
    longer than n_ctx (the seen items come from the full history, not the window)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t in range(rng.integers(3, 15)):
            rows.append({"user": f"u{u}", "item": int(rng.integers(1, D_VOCAB)), "timestamp": float(t)})
    # every item at least once so that d_vocab = 60 and vocabulary index = item id
    rows += [{"user": "all", "item": i, "timestamp": float(i)} for i in range(1, D_VOCAB)]
    ds = build_dataset(pd.DataFrame(rows), {}, "tiny")
    assert ds.d_vocab == D_VOCAB
    return ds.eval_split("test", N_CTX)


@pytest.fixture(scope="module")
def setup():
    model = build_model(ModelConfig(d_vocab=D_VOCAB, n_ctx=N_CTX, n_layers=1, d_model=16, d_head=8), seed=0).eval()
    return model, tiny_split()


def torch_ranks(model, split):
    return split_ranks(model_scorer(model, split), split, D_VOCAB, n_sampled=0)


def test_split_exercises_repeats_and_long_histories(setup):
    _, split = setup
    seen_target = [split.target[r] in split.seen_items[split.seen_ptr[r] : split.seen_ptr[r + 1]]
                   for r in range(len(split))]
    assert 0.1 < np.mean(seen_target) < 0.9
    assert np.diff(split.seen_ptr).max() > N_CTX


@pytest.mark.parametrize("attention", [{}, {"attention": "static", "distance_buckets": 0, "time_buckets": 6}])
def test_user_vectors_reproduce_logits(setup, attention):
    _, split = setup
    model = build_model(ModelConfig(d_vocab=D_VOCAB, n_ctx=N_CTX, n_layers=1, d_model=16, d_head=8, **attention))
    model = with_random_distance_weights(model, seed=2)  # time-bucket weights start at zero: uniform attention
    q, items = user_vectors(model, split, batch_size=7), item_vectors(model)
    assert model.training  # its mode is restored; the vectors are eval mode's (no dropout)
    model.eval()
    assert q.dtype == items.dtype == np.float32 and q.shape == (len(split), 16) and items.shape == (D_VOCAB, 16)
    logits = model_scorer(model, split)(torch.from_numpy(split.history), np.arange(len(split)))
    np.testing.assert_allclose(q @ items.T, logits.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [20, 5])
def test_exact_index_equals_torch_evaluator(setup, k):
    model, split = setup
    expected = torch_ranks(model, split)
    got = retrieval_ranks(build_index(item_vectors(model), "exact"), user_vectors(model, split), split, k=k)
    for policy in ("full/included", "full/excluded"):
        assert got[policy].dtype == np.int64
        np.testing.assert_array_equal(got[policy], np.minimum(expected[policy], k + 1))
        if k == 20:
            want, have = metrics_from_ranks(expected[policy]), metrics_from_ranks(got[policy])
            assert want.keys() == have.keys()
            for name in want:
                assert have[name] == pytest.approx(want[name], abs=1e-6), (policy, name)
    # the policies differ on this split (seen targets are misses, other ranks move up)
    assert (got["full/excluded"] != got["full/included"]).any()


def test_excluded_searched_in_small_chunks_is_unchanged(setup, monkeypatch):
    import circuits.scoring.retrieval as retrieval

    model, split = setup
    monkeypatch.setattr(retrieval, "RESULTS_PER_SEARCH", 100)  # a few users per faiss call
    got = retrieval_ranks(build_index(item_vectors(model), "exact"), user_vectors(model, split), split, k=5)
    np.testing.assert_array_equal(got["full/excluded"], np.minimum(torch_ranks(model, split)["full/excluded"], 6))


def test_ties_are_pessimistic_like_torch(setup):
    """Items 2j and 2j − 1 share one vector, so every target ties with its twin; and a constant scorer
    ranks every target last (a miss), whatever order faiss returns tied items in. (Except user "all": every
    other item is in its history, so under `excluded` its target is the one candidate left, rank 1.)"""
    model, split = setup
    twins = build_model(model.cfg, seed=1).eval()
    with torch.no_grad():
        twins.W_U[:, 2::2] = twins.W_U[:, 1:-1:2]
    expected = torch_ranks(twins, split)
    got = retrieval_ranks(build_index(item_vectors(twins), "exact"), user_vectors(twins, split), split)
    for policy in got:
        np.testing.assert_array_equal(got[policy], np.minimum(expected[policy], 21))
    with torch.no_grad():
        twins.W_U.zero_()
    got = retrieval_ranks(build_index(item_vectors(twins), "exact"), user_vectors(twins, split), split)
    assert (got["full/included"] == 21).all()
    np.testing.assert_array_equal(got["full/excluded"], np.minimum(torch_ranks(twins, split)["full/excluded"], 21))
    assert (got["full/excluded"] == 21).sum() == len(split) - 1


def brute_force_top(queries, vectors, k):
    """Vocabulary ids of the k best items (1..) per query, by a dense numpy product."""
    scores = queries @ vectors[1:].T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k] + 1


def pool(n=800, d=16, n_queries=100, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n + 1, d)).astype(np.float32)
    return vectors, rng.standard_normal((n_queries, d)).astype(np.float32)


def test_hnsw_with_generous_ef_is_exact_and_ivfpq_reports_its_recall():
    vectors, queries = pool()
    truth = brute_force_top(queries, vectors, 10)
    hnsw = build_index(vectors, "hnsw", M=16, ef_construction=100, ef_search=400)
    assert recall_at_k(hnsw.search(queries, 10)[1], truth) >= 0.99
    ivfpq = build_index(vectors, "ivfpq", nlist=8, m=4, nbits=4, nprobe=2)
    assert ivfpq.params["m"] == 4 and ivfpq.build_s > 0
    recall = recall_at_k(ivfpq.search(queries, 10)[1], truth)
    assert 0.0 < recall < 1.0  # 4 codes of 4 bits per item and 2 of 8 lists searched: approximate


def test_hnsw_search_deeper_than_ef_search_returns_k_items():
    """faiss 1.15 returns only about efSearch results; the index raises efSearch to the depth asked for."""
    vectors, queries = pool()
    hnsw = build_index(vectors, "hnsw", M=16, ef_construction=100, ef_search=8)
    scores, items = hnsw.search(queries, 300)
    assert (items >= 1).all() and np.isfinite(scores).all()
    assert recall_at_k(items, brute_force_top(queries, vectors, 300)) > 0.9


def test_recall_at_k_counts_overlap():
    assert recall_at_k(np.array([[1, 2, 3], [4, -1, -1]]), np.array([[3, 2, 9], [4, 5, 6]])) == pytest.approx(
        (2 / 3 + 1 / 3) / 2)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_padding_is_never_returned(kind):
    """Row 0 gets a vector that would beat every item for every query, were it indexed."""
    vectors, queries = pool(n=200)
    queries = np.abs(queries)
    vectors[0] = 100.0
    index = build_index(vectors, kind)
    assert index.n_items == 200
    scores, items = index.search(queries, 200)
    assert 0 not in items and items.max() <= 200
    found = items >= 0
    assert found.sum(1).min() >= 10 and (np.diff(np.where(found, scores, -1e30), axis=1) <= 1e-5).all()


def test_ivfpq_is_clamped_to_a_tiny_pool(capfd):
    vectors, queries = pool(n=59)
    index = build_index(vectors, "ivfpq", nlist=100, m=5, nbits=8, nprobe=64)
    assert index.params == {"nlist": 1, "m": 4, "nbits": 1, "nprobe": 1, "seed": 0}
    assert (index.search(queries, 10)[1] >= 1).all()
    assert "WARNING" not in capfd.readouterr().err  # faiss's "please provide at least … training points"


def test_retrieval_table(setup):
    model, split = setup
    table = retrieval_table(model, split, params={"hnsw": {"ef_search": 100}})
    assert list(table["index"]) == ["exact", "hnsw", "ivfpq"]
    exact = table.set_index("index").loc["exact"]
    ranks = torch_ranks(model, split)
    for policy in ("full/included", "full/excluded"):
        m = metrics_from_ranks(ranks[policy])
        assert exact[f"{policy} HR@10"] == pytest.approx(m["HR@10"])
        assert exact[f"{policy} NDCG@10"] == pytest.approx(m["NDCG@10"])
    assert exact["recall@10"] == 1.0 and table.set_index("index").loc["hnsw", "recall@10"] == 1.0
    assert (table["recall@10"] <= 1.0).all() and (table["qps"] > 0).all() and (table["n_items"] == 59).all()
    assert "ef_search=100" in table.set_index("index").loc["hnsw", "params"]


def test_bad_input_is_a_user_error(setup, monkeypatch):
    model, split = setup
    vectors, queries = item_vectors(model), user_vectors(model, split)
    with pytest.raises(UserError, match="unknown index kind"):
        build_index(vectors, "annoy")
    with pytest.raises(UserError, match="unknown hnsw parameter"):
        build_index(vectors, "hnsw", efSearch=10)
    index = build_index(vectors, "exact")
    with pytest.raises(UserError, match="k must be at least 1"):
        retrieval_ranks(index, queries, split, k=0)
    with pytest.raises(UserError, match="query vectors"):
        retrieval_ranks(index, queries[:3], split)
    with pytest.raises(UserError, match="unknown index kind"):
        retrieval_table(model, split, kinds=("exact", "flat"))
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(UserError, match="faiss is not installed"):
        build_index(vectors, "exact")
