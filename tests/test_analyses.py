"""Analyses on tiny synthetic data where the right answer is known."""

import json

import numpy as np
import pytest
import torch

from analyses.order import order_sensitivity, transform_histories, transform_history
from circuits.runs import load_run
from tests.helpers import example_times, tiny_journeys, train_tiny


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyses")
    folder = tiny_journeys(root / "data", n_users=100, max_length=16)
    return {layers: load_run(train_tiny(folder, root / f"L{layers}", layers)) for layers in (0, 1)}


def test_transforms_keep_the_items_and_deduplicate_to_latest_occurrences():
    rng = np.random.default_rng(0)
    items = np.array([1, 2, 1, 3, 2])
    assert transform_history(items, "deduplicated", rng).tolist() == [1, 3, 2]
    assert transform_history(items, "reversed", rng).tolist() == [2, 3, 1, 2, 1]
    for kind in ("shuffled", "shuffled_keep_last"):
        out = transform_history(items, kind, rng)
        assert sorted(out.tolist()) == sorted(items.tolist())
    assert transform_history(items, "shuffled_keep_last", rng)[-1] == 2
    padded = np.array([[0, 0, 5, 6, 5], [1, 2, 3, 4, 5]])
    dedup = transform_histories(padded, "deduplicated")
    assert dedup.tolist() == [[0, 0, 0, 6, 5], [1, 2, 3, 4, 5]]
    # timestamps: de-duplication drops those of the dropped occurrences; the other transforms move items only
    times = np.array([[0, 0, 10.0, 20.0, 30.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    items, t = transform_histories(padded, "deduplicated", times=times)
    assert items.tolist() == dedup.tolist() and t.tolist() == [[0, 0, 0, 20.0, 30.0], [1.0, 2.0, 3.0, 4.0, 5.0]]
    for kind in ("shuffled", "reversed", "shuffled_keep_last"):
        items, t = transform_histories(padded, kind, seed=1, times=times)
        assert items.tolist() == transform_histories(padded, kind, seed=1).tolist() and t.tolist() == times.tolist()


def test_a_zero_layer_model_ignores_everything_but_the_latest_item(tiny_runs):
    run = tiny_runs[0]
    table = order_sensitivity(run).set_index("transform")
    assert table.loc["shuffled_keep_last", "NDCG@10"] == table.loc["intact", "NDCG@10"]
    # and exactly so: same logits at the last position
    ds = run.dataset()
    h = ds.eval_split("test", run.model.cfg.n_ctx).history
    with torch.no_grad():
        a = run.model(torch.from_numpy(h))[:, -1]
        b = run.model(torch.from_numpy(transform_histories(h, "shuffled_keep_last", seed=3)))[:, -1]
    torch.testing.assert_close(a, b)


def test_order_table_against_a_per_user_loop_and_the_stored_test_metric(tiny_runs):
    """Each transform's NDCG@10 = the model run user by user on the unpadded transformed history, ranked by
    hand (pessimistic ties, all items: this data's policy is 'included'); intact = the run's own test metric."""
    run = tiny_runs[1]
    assert run.seen_policy == "included"
    table = order_sensitivity(run, seed=3).set_index("transform")
    assert list(table.index) == ["intact", "shuffled_keep_last", "shuffled", "reversed", "deduplicated"]
    test = run.dataset().eval_split("test", run.model.cfg.n_ctx)
    intact = run.metrics["model"]["test"]["full/included"]["NDCG@10"]
    for kind in table.index:  # the default model reads time gaps: items move, times stay (see transform_histories)
        histories, times = transform_histories(test.history, kind, seed=3, times=test.history_times)
        gains = []
        for history, t, target in zip(histories, times, test.target):
            with torch.no_grad():
                real = history != 0
                scores = run.model(torch.from_numpy(history[real])[None], torch.from_numpy(t[real])[None])[0, -1, 1:]
            rank = 1 + int((scores > scores[target - 1]).sum()) + int((scores == scores[target - 1]).sum()) - 1
            gains.append(1 / np.log2(rank + 1) if rank <= 10 else 0.0)
        assert table.loc[kind, "NDCG@10"] == pytest.approx(np.mean(gains), abs=1e-9), kind
        assert table.loc[kind, "NDCG@10_change"] == pytest.approx(np.mean(gains) - intact, abs=1e-9), kind
    assert table.loc["intact", "NDCG@10"] == pytest.approx(intact, abs=1e-12)


def test_translation_geometry_against_numpy():
    from analyses.translation import geometry

    rng = np.random.default_rng(0)
    v = rng.normal(size=(200, 6)) + np.array([3.0, 0, 0, 0, 0, 1.0])
    g = geometry({0: torch.from_numpy(v)}).iloc[0]
    m = v.mean(0)
    second = (v**2).sum(1).mean()
    assert g["mean_share"] == pytest.approx(m @ m / second)
    assert g["along_mean"] == pytest.approx(((v @ (m / np.linalg.norm(m))) ** 2).mean() / second)
    assert geometry({0: torch.ones(5, 3) * 2}).iloc[0][["mean_share", "along_mean"]].tolist() == pytest.approx([1, 1])


def test_constant_head_outputs_are_a_pure_translation(tiny_runs):
    """Identical embeddings and no positions: every residual is the same, so each head writes one constant
    vector; replacing it by its mean changes nothing, removing it may."""
    import dataclasses

    from analyses.translation import translation_vector
    from circuits.config import ModelConfig
    from circuits.model import AttnOnlyTransformer

    run = tiny_runs[1]
    cfg = ModelConfig(**{**run.model.cfg.to_dict(), "positional": False})
    model = AttnOnlyTransformer(cfg)
    state = {k: v for k, v in run.model.state_dict().items() if k != "W_pos"}
    state["W_E"] = state["W_E"][1:2].repeat(cfg.d_vocab, 1)
    model.load_state_dict(state)
    model.eval()
    geo, abl = translation_vector(dataclasses.replace(run, model=model))
    assert geo["mean_share"].tolist() == pytest.approx([1.0]) and geo["along_mean"].tolist() == pytest.approx([1.0])
    assert list(abl["ablated"]) == ["L0H0", "L0H1", "L1"]
    np.testing.assert_allclose(abl["mean_ablated"], abl["intact"])


@torch.no_grad()
def test_last_position_outputs_against_a_per_user_forward(tiny_runs):
    from analyses.translation import last_position_outputs

    model = tiny_runs[1].model
    test = tiny_runs[1].dataset().eval_split("test", model.cfg.n_ctx)
    out = last_position_outputs(model, test, batch=7)
    for i in (0, 5, len(test) - 1):
        real = test.history[i] != 0
        x = torch.from_numpy(test.history[i][real])[None]
        _, cache = model.run_with_cache(x, times=torch.from_numpy(test.history_times[i][real])[None])
        for h in range(2):
            torch.testing.assert_close(out[f"L0H{h}"][i], cache["blocks.0.attn.hook_result"][0, -1, h])
        torch.testing.assert_close(out["L1"][i], cache["blocks.0.attn.hook_result"][0, -1].sum(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(out["direct"][i], model.W_E[x[0, -1]] + model.W_pos[x.shape[1] - 1])


@torch.no_grad()
def test_replacing_a_layer_at_the_last_position_leaves_the_others(tiny_runs):
    from circuits.interp.ablation import ablated_layers

    model = tiny_runs[1].model
    x, t = torch.tensor([[3, 5, 7, 9, 11]]), example_times(5)
    c = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    intact = model(x, t)
    with ablated_layers(model, {0: c}, position=-1):
        replaced = model(x, t)
    torch.testing.assert_close(replaced[0, :-1], intact[0, :-1])
    direct = model.W_E[11] + model.W_pos[4]
    torch.testing.assert_close(replaced[0, -1], (direct + c) @ model.W_U)


def test_the_fitted_translation_is_the_cross_entropy_minimum():
    """Convex in c: at the solution the gradient vanishes, and the loss is below the starting point's."""
    from analyses.translation import fit_translation

    g = torch.Generator().manual_seed(1)
    base, W_U = torch.randn(200, 6, generator=g), torch.randn(6, 30, generator=g)
    targets = torch.randint(1, 30, (200,), generator=g)

    def loss(c):
        logits = (base.double() + c) @ W_U.double()
        logits[:, 0] = float("-inf")
        return torch.nn.functional.cross_entropy(logits, targets)

    init = torch.zeros(6)
    with torch.no_grad():  # as in a notebook cell under no_grad: the fit still gets its gradients
        c = fit_translation(base, targets, W_U, init).double().requires_grad_(True)
    value = loss(c)
    value.backward()
    assert c.grad.abs().max() < 1e-5 and value < loss(init.double())


def test_same_item_shares_against_direct_computations(tiny_runs):
    from circuits.interp.sources import attention_sources, same_item_shares, same_item_table

    model = tiny_runs[1].model
    ds = tiny_runs[1].dataset()
    test = ds.eval_split("test", model.cfg.n_ctx)
    h, ht = test.history[:12], test.history_times[:12]
    table = same_item_table(model, h, batch=5, times=ht).set_index(["head", "pattern"])
    # actual: the per-sequence view, one query position at a time, averaged over every real query
    per_query = [same_item_shares(attention_sources(model, torch.from_numpy(row[row != 0]), 1,
                                                    timestamps=t[row != 0], query=q))
                 for row, t in zip(h, ht) for q in range((row != 0).sum())]
    for head in model.head_labels():
        want = np.mean([v.loc[head, "same_item_share"] for v in per_query])
        assert table.loc[(head, "actual"), "same"] == pytest.approx(want, abs=1e-6)
        assert table.loc[(head, "actual"), "near"] >= table.loc[(head, "actual"), "same"] - 1e-9
    # uniform: the share of visible items equal to the query, per real query position
    want = []
    for row in h:
        real = row[row != 0]
        want += [np.mean(real[: q + 1] == real[q]) for q in range(len(real))]
    assert table.loc[("L0H0", "uniform"), "same"] == pytest.approx(np.mean(want))
    one_item = np.full((3, h.shape[1]), 5)
    ones = same_item_table(model, one_item, times=np.tile(1.7e9 + 60.0 * np.arange(h.shape[1]), (3, 1)))
    np.testing.assert_allclose(ones["same"], 1.0, rtol=1e-5)


def test_same_item_positional_pattern_of_static_attention_is_its_distance_part(tiny_runs):
    from circuits.config import ModelConfig
    from circuits.interp.sources import same_item_table
    from circuits.model import build_model
    from tests.helpers import ATTENTION_VARIANTS, with_random_distance_weights

    ds = tiny_runs[1].dataset()
    sp = ds.eval_split("test", 10)
    h, t = sp.history[:20], sp.history_times[:20]
    cfg = ModelConfig(d_vocab=ds.d_vocab, n_ctx=10, n_layers=1, n_heads=2, d_model=8, d_head=4,
                      **ATTENTION_VARIANTS["distance+time"])
    model = with_random_distance_weights(build_model(cfg, 0).eval(), seed=4)
    table = same_item_table(model, h, times=t).set_index(["head", "pattern"])
    # reference: the same model with its time scores zeroed attends by distance alone
    model.blocks[0].attn.W_time.data.zero_()
    distance_only = same_item_table(model, h, times=t).set_index(["head", "pattern"])
    for head in ("L0H0", "L0H1"):
        assert table.loc[(head, "positional"), "same"] == pytest.approx(distance_only.loc[(head, "actual"), "same"])
        assert table.loc[(head, "actual"), "same"] != pytest.approx(distance_only.loc[(head, "actual"), "same"])
    time_only = build_model(ModelConfig(**{**cfg.to_dict(), "distance_buckets": 0}), 0).eval()
    assert "positional" not in set(same_item_table(time_only, h, times=t)["pattern"])
    with pytest.raises(ValueError, match="time gaps"):
        same_item_table(time_only, h)  # a time model never runs on made-up times


def log_dataset(sequences: dict[str, list[str]], gap: float = 60.0):
    import pandas as pd

    from circuits.data.sequences import build_dataset

    rows = [(u, it, t * gap) for u, seq in sequences.items() for t, it in enumerate(seq)]
    return build_dataset(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), {}, "tiny")


def test_diagnostics_of_pure_repeats_and_of_unrelated_targets():
    from analyses.diagnostics import diagnostics

    repeats = diagnostics(log_dataset({f"u{i}": [f"i{i % 3}"] * 6 for i in range(9)})).iloc[0]
    assert repeats["repeat_rate"] == 1.0 and repeats["target_in_history"] == 1.0 and repeats["unrelated_rate"] == 0.0
    assert repeats["median_gap_s"] == 60 and repeats["gap_under_30min"] == 1.0 and repeats["mean_session_length"] == 6
    # u0's target z co-occurs with nothing u0 saw (AAAA→C); u1's target b is held by u2 together with a
    ds = log_dataset({"u0": ["a", "a", "a", "a", "z"], "u1": ["a", "c", "x", "b"], "u2": ["a", "b", "y", "q"]}, gap=3600)
    d = diagnostics(ds).iloc[0]
    assert d["test_users"] == 3 and d["unrelated_rate"] == pytest.approx(2 / 3)  # u0 and u2 (q: only in its own test)
    assert d["repeat_rate"] == 0 and d["gap_under_30min"] == 0 and d["mean_session_length"] == 1


def test_cooccurrence_baseline_against_a_dense_count():
    from circuits.scoring.baselines import baseline_scorer

    ds = log_dataset({"u0": ["a", "b", "c", "d"], "u1": ["b", "c", "e", "f"], "u2": ["a", "e", "b", "c", "g"]})
    split = ds.eval_split("test", 8)
    got = baseline_scorer("cooccurrence", ds)(torch.from_numpy(split.history), np.arange(len(split))).numpy()
    users = [set(s.tolist()) for s in ds.train_sequences()]

    def n(*items):
        return sum(all(i in s for i in items) for s in users)

    for r, row in enumerate(split.history):
        for i in range(1, ds.d_vocab):
            want = sum(n(h, i) / np.sqrt(n(h) * n(i)) for h in set(row[row != 0].tolist()) if n(h) and n(i))
            assert got[r, i] - ds.train_counts()[i] / (ds.train_counts().max() + 1) == pytest.approx(want)


def test_the_analysis_clis_write_their_tables_and_figures(tiny_runs, tmp_path, capsys):
    from analyses import diagnostics, order, same_item, translation
    from circuits.errors import UserError

    one, zero = str(tiny_runs[1].path), str(tiny_runs[0].path)
    order.main([zero, one, "--out", str(tmp_path / "o")])
    translation.main([one, "--out", str(tmp_path / "t")])
    same_item.main([one, "--out", str(tmp_path / "s")])
    folder = tiny_runs[1].data_source()
    diagnostics.main([folder, "--out", str(tmp_path / "d")])
    for f in ("o/order.csv", "o/order.html", "t/geometry.csv", "t/ablations.csv", "t/translation.html",
              "s/same_item.csv", "s/same_item.html", "d/diagnostics.csv", "d/diagnostics.html"):
        assert (tmp_path / f).stat().st_size > 0, f
    with pytest.raises(UserError, match="0-layer"):
        translation.main([zero, "--out", str(tmp_path / "t0")])


def test_depth_sweep_trains_each_depth_and_seed_once_and_summarises(tiny_runs, tmp_path, capsys):
    import pandas as pd

    from analyses import depth
    from circuits.errors import UserError

    folder = tiny_runs[0].data_source()
    args = ["--data", folder, "--layers", "0", "1", "--seeds", "0", "1", "--out", str(tmp_path / "d"),
            "--max-minutes", "0", "--epochs", "2", "--", "--d-model", "16", "--d-head", "8", "--warmup-steps", "5"]
    depth.main(args)
    summary = pd.read_csv(tmp_path / "d" / "depth.csv")
    rows = pd.read_csv(tmp_path / "d" / "depth_runs.csv")
    assert list(summary["layers"]) == [0, 1] and list(summary["seeds"]) == [2, 2]
    assert summary.loc[1, "test_NDCG@10_mean"] == pytest.approx(rows[rows.layers == 1]["test_NDCG@10"].mean())
    # seed-major (an interrupted sweep has whole depth curves for its first seeds); the epoch budget holds
    assert rows[["seed", "layers"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert (rows["minutes"] > 0).all() and (rows["epochs_run"] <= 2).all() and (rows["d_model"] == 16).all()
    mtime = (tmp_path / "d" / "L1-s1" / "metrics.json").stat().st_mtime
    depth.main(args)  # finished runs are reused, not retrained
    assert (tmp_path / "d" / "L1-s1" / "metrics.json").stat().st_mtime == mtime
    with pytest.raises(UserError, match="give a training budget"):
        depth.main(["--data", folder, "--max-minutes", "0", "--out", str(tmp_path / "e")])
    # the sweep's report page: the summary, every run, the learning curves; drawn in a browser when there is one
    from circuits.report import build_report
    from tests.browser import have_chromium, open_in_chromium

    page = build_report([], tmp_path / "sweep.html", sweep=tmp_path / "d", progress=False)
    html = page.read_text()
    assert ">Experiment: depth sweep</h2>" in html and "2 epochs" in html
    assert all(f">L{l}-s{s}</td>" in html for l in (0, 1) for s in (0, 1))
    if have_chromium():
        seen = open_in_chromium(page, tmp_path / "browser")
        assert seen["errors"] == [] and seen["drawn"] == seen["figures"] == 2 and seen["requests"] == []


@pytest.mark.parametrize("attention", ["static", "static-time", "static-both", "uniform"])
def test_static_and_uniform_attention_go_through_training_decomposition_and_reports(tiny_runs, tmp_path, capsys,
                                                                                    attention):
    from circuits import decompose, heads, pairs
    from circuits.errors import UserError
    from circuits.report import build_report
    from circuits.scoring.metrics import rank_of_target

    folder = tiny_runs[0].data_source()
    kind, _, over = attention.partition("-")
    train_tiny(folder, tmp_path / "r", 2, "--attention", kind, *(["--static-over", over] if over else []))
    run = load_run(tmp_path / "r")
    assert run.model.cfg.attention == kind and run.model.cfg.uses_time == (over in ("time", "both"))
    # the stored test metric = target ranks recomputed user by user from the unpadded history and its timestamps
    ds = run.dataset()
    ranks = []
    for u in ds.eval_split("test", run.model.cfg.n_ctx).users:
        lo, hi = ds.offsets[u], ds.offsets[u + 1] - 1
        with torch.no_grad():
            scores = run.model(torch.tensor(ds.items[lo:hi])[None], torch.tensor(ds.timestamps[lo:hi])[None])
        ranks.append(int(rank_of_target(scores[0, -1, 1:], torch.tensor(int(ds.items[hi]) - 1))))
    ndcg = np.mean([(r <= 10) / np.log2(r + 1) for r in ranks])
    assert run.metrics["model"]["test"]["full/included"]["NDCG@10"] == pytest.approx(ndcg)
    decompose.main([str(tmp_path / "r"), "--seq-id", str(ds.user_ids[0]), "--paths"])
    assert "L1H0<-L0H1" in capsys.readouterr().out
    heads.main([str(tmp_path / "r"), "--json"])
    scores = json.loads(capsys.readouterr().out)
    # no QK: value composition only, of every layer-0 head with every layer-1 head
    assert sorted((c["kind"], c["source"], c["target"]) for c in scores["composition"]) == [
        ("V", f"L0H{i}", f"L1H{j}") for i in range(2) for j in range(2)]
    assert [h["head"] for h in scores["heads"]] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    static_kinds = {w["kind"] for w in scores["static_weights"] or []}
    assert static_kinds == {"static": {"distance"}, "static-time": {"time"}, "static-both": {"distance", "time"},
                            "uniform": set()}[attention]
    heads.main([str(tmp_path / "r")])
    assert ("static attention scores per time bucket" in capsys.readouterr().out) == run.model.cfg.uses_time
    with pytest.raises(UserError, match="no QK circuit"):
        pairs.main([str(tmp_path / "r"), "--circuit", "QK:L0H0"])
    page = build_report([tmp_path / "r"], tmp_path / "r.html", experiments=True, progress=False)
    html = page.read_text()
    assert ">Attention patterns</h2>" in html and "QK:L0H0" not in html
    assert ("Static attention weights" in html) == (kind == "static")
    from tests.browser import have_chromium, open_in_chromium

    if over == "both" and have_chromium():
        seen = open_in_chromium(page, tmp_path / "browser")
        assert seen["errors"] == [] and seen["drawn"] == seen["figures"] > 0 and seen["requests"] == []
