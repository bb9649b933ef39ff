"""The candidate pool, the cold-start split, the text baselines and cold/warm evaluation, each against a plain
per-user computation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.data.sequences import Preprocess, build_dataset
from circuits.errors import UserError
from circuits.scoring.baselines import baseline_scorer
from circuits.scoring.evaluator import evaluate_model
from circuits.scoring.metrics import evaluate_split
from tests.helpers import model_with_sides, text_vectors
from tests.test_metrics import per_user_reference


def log(n_users=40, n_items=30, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(3, 10), replace=False)
        rows += [(f"u{u:02d}", f"i{i:02d}", float(t)) for t, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def sequences(ds) -> dict[str, list[str]]:
    return {u: list(ds.item_ids[ds.items[ds.offsets[r]:ds.offsets[r + 1]]]) for r, u in enumerate(ds.user_ids)}


def test_the_catalogue_pool_adds_items_without_interactions():
    titles = {f"i{i:02d}": f"doc {i}" for i in range(35)}  # i30..i34 have text but no interaction
    df = log()
    log_only = build_dataset(df, titles, "t")
    pooled = build_dataset(df, titles, "t", Preprocess(pool="catalogue"))
    assert set(pooled.item_ids[1:]) == set(titles) and log_only.n_items == 30
    assert sequences(pooled) == sequences(log_only)  # the same journeys, over a larger vocabulary
    assert (pooled.train_counts()[pooled.item_ids == "i33"] == 0).all()
    with pytest.raises(UserError, match="item metadata"):
        build_dataset(df, {}, "t", Preprocess(pool="catalogue"))


def test_held_out_items_remain_only_as_last_items():
    df = log(n_users=200)
    # users who read only a few documents: some lose everything to the hold-out
    df = pd.concat([df, pd.DataFrame([(f"v{u}", f"i{u % 30:02d}", 0.0) for u in range(30)],
                                     columns=df.columns)], ignore_index=True)
    full = sequences(build_dataset(df, {}, "t"))
    ds = build_dataset(df, {}, "t", Preprocess(cold_items=0.2, cold_seed=3))
    held = set(df["item"].unique()) - set(ds.item_ids[ds.train_counts() > 0])
    got = sequences(ds)
    n_cold = 0
    for u, seq in full.items():  # the rule, user by user: drop held-out items except a last one
        want = [i for i in seq[:-1] if i not in held] + [seq[-1]]
        if len(want) < 3:
            want = [i for i in want if i not in held]
        if want:
            assert got[u] == want, u
        else:  # a user whose every interaction was held out is gone, not kept with no rows
            assert u not in got, u
        n_cold += len(want) >= 3 and want[-1] in held
    assert ds.info["cold_items_held_out"] == round(0.2 * 30) and ds.lengths.min() >= 1
    split = ds.eval_split("test", 10)
    assert ds.cold_targets(split).sum() == n_cold == ds.info["cold_test_targets"] > 0
    assert not ds.cold_targets(ds.eval_split("valid", 10)).any()
    again = build_dataset(df, {}, "t", Preprocess(cold_items=0.2, cold_seed=3))
    other = build_dataset(df, {}, "t", Preprocess(cold_items=0.2, cold_seed=4))
    assert again.fingerprint == ds.fingerprint != other.fingerprint


def reference_text_metrics(E: np.ndarray, split, name: str, k: int, policy: str) -> dict:
    """emb-mean / text-knn written as loops over users and items."""
    unit = [v / np.linalg.norm(v) if np.linalg.norm(v) > 0 else v for v in E]
    scores = np.zeros((len(split), len(E)))
    for r in range(len(split)):
        hist = [i for i in split.history[r] if i != 0]
        if name == "emb-mean":
            u = sum(unit[i] for i in hist[-k:]) / len(hist[-k:])
        else:
            u = unit[hist[-1]]
        u = u / np.linalg.norm(u)
        scores[r] = [float(u @ unit[i]) for i in range(len(E))]
    return per_user_reference(scores.astype(np.float32), split, policy)


@pytest.mark.parametrize("name,k", [("emb-mean", 3), ("emb-mean", 50), ("text-knn", 0)])
def test_text_baselines_match_a_per_user_loop(name, k):
    ds = build_dataset(log(), {}, "t")
    split = ds.eval_split("test", 8)
    E = text_vectors(ds.d_vocab, 5, seed=2).numpy()
    got = evaluate_split(baseline_scorer(name, ds, torch.from_numpy(E), k=max(k, 1)), split, ds.d_vocab, n_sampled=0)
    for policy in ("excluded", "included"):
        want = reference_text_metrics(E, split, name, max(k, 1), policy)
        for m, v in want.items():
            assert abs(got[f"full/{policy}"][m] - v) < 1e-6, (policy, m)


def test_cold_and_warm_targets_are_reported_apart_and_unseen_items_have_no_learned_id_vector():
    ds = build_dataset(log(n_users=120), {}, "t", Preprocess(cold_items=0.25))
    split = ds.eval_split("test", 8)
    cold = ds.cold_targets(split)
    assert 0 < cold.sum() < len(cold)
    models = {side: model_with_sides(side, 1, d_vocab=ds.d_vocab) for side in ("id", "text", "hybrid")}
    for model in models.values():
        model.set_unseen(ds.train_counts())
    unseen = torch.from_numpy(ds.train_counts() == 0)
    unseen[0] = False
    assert unseen.sum() >= ds.info["cold_items_held_out"] > 0  # held out, or only ever a valid/test target
    with torch.no_grad():
        history = torch.from_numpy(split.history[:6])
        for side, model in models.items():
            r = model.residual(history)[:, -1]
            sd = model.state_dict()
            logits = model.unembed(r)
            if side == "id":  # no vector for an item never seen in training: never recommended
                assert torch.isinf(logits[:, unseen]).all() and torch.isfinite(logits[:, ~unseen][:, 1:]).all()
                continue
            # text and hybrid: an unseen item scores by its text alone, r W_out e_j (the hybrid's W_U_id unused)
            text_only = r @ sd["W_out"] @ sd["E_text"][unseen].T
            torch.testing.assert_close(logits[:, unseen], text_only)
            if side == "hybrid":
                seen = torch.nonzero(~unseen).squeeze(1)[1:]
                torch.testing.assert_close(logits[:, seen], r @ (sd["W_out"] @ sd["E_text"][seen].T
                                                                 + sd["W_U_id"][:, seen]))
    m = {side: evaluate_model(model, ds, 8, baselines=()) for side, model in models.items()}
    assert set(m["id"]["model"]) == {"valid", "test", "test/cold", "test/warm"}
    assert m["id"]["model"]["test/cold"]["full/excluded"]["HR@20"] == 0.0  # by construction
    assert m["id"]["users"]["test/cold"] == cold.sum()
    for metrics in m.values():  # the two parts average to the whole test split
        for protocol in ("full/excluded", "full/included"):
            whole = metrics["model"]["test"][protocol]["NDCG@10"]
            parts = (metrics["model"]["test/cold"][protocol]["NDCG@10"] * cold.sum()
                     + metrics["model"]["test/warm"][protocol]["NDCG@10"] * (~cold).sum()) / len(cold)
            assert math.isclose(whole, parts, abs_tol=1e-9)
    assert set(evaluate_model(models["text"], ds, 8)["baselines"]) >= {"emb-mean", "text-knn"}


def test_editing_the_items_file_beside_a_log_file_is_a_new_cache_entry(tmp_path, monkeypatch):
    """read_log takes a log file's titles (and a catalogue pool) from the items file beside it: that file must be
    part of the cache key, or a changed catalogue would come back stale."""
    import os

    from circuits.data import load_dataset

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    log().rename(columns={"user": "user_id", "item": "item_id"}).to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    items = tmp_path / "items.tsv"
    pd.DataFrame({"item_id": [f"i{i:02d}" for i in range(32)], "title": ["x"] * 32}).to_csv(items, sep="\t", index=False)
    first = load_dataset(str(tmp_path / "log.tsv"), pool="catalogue")
    pd.DataFrame({"item_id": [f"i{i:02d}" for i in range(35)], "title": ["y"] * 35}).to_csv(items, sep="\t", index=False)
    os.utime(items, ns=(1, 1))  # even with an old modification time: the size differs
    second = load_dataset(str(tmp_path / "log.tsv"), pool="catalogue")
    assert (first.n_items, second.n_items) == (32, 35) and set(second.titles[1:]) == {"y"}
