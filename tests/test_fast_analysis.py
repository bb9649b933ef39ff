"""The fast analysis paths against the slow obvious ones: the last-position pass against the model's full forward
(and its hooks), batched ablations against one full evaluation per ablation, the report's shared test-split pass
against each section's own computation."""

import numpy as np
import pytest
import torch

from circuits.config import ModelConfig
from circuits.interp.ablation import ablated, ablated_heads, ablated_layers
from circuits.interp.attribution import residual_components
from circuits.interp.last_position import (
    final_residual,
    last_position_pass,
    length_batches,
    model_ranks,
)
from circuits.model import build_model
from tests.helpers import ATTENTION_VARIANTS, ITEM_SIDE_VARIANTS, example_times, with_random_distance_weights

D_VOCAB = 31


def make_model(n_layers=2, seed=0, **kw):
    cfg = ModelConfig(d_vocab=D_VOCAB, n_ctx=12, n_layers=n_layers, n_heads=2, d_model=16, d_head=8, **kw)
    text = torch.randn(D_VOCAB, cfg.d_text, generator=torch.Generator().manual_seed(seed)) if cfg.uses_text else None
    model = with_random_distance_weights(build_model(cfg, seed, E_text=text), seed + 1).eval()
    model.unseen[[4, 9]] = cfg.unembed_side == "id"  # two unscorable items where the output is by id
    return model


def padded_batch(seed=0, batch=6, n=10):
    """Left-padded histories of different lengths (1 to n items) and their timestamps (0 under padding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, D_VOCAB, (batch, n), generator=g)
    lengths = torch.tensor([n, 1, 3, n - 1, 5, 2][:batch])
    x[torch.arange(n)[None, :] < (n - lengths)[:, None]] = 0
    t = example_times(n, batch) * (x != 0)
    return x, t


CONFIGS = {**{f"L{n}": {"n_layers": n} for n in (0, 1, 3)}, **ATTENTION_VARIANTS,
           "no-pos": {"positional": False}, **{k: v for k, v in ITEM_SIDE_VARIANTS.items() if k != "id"}}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_last_position_pass_equals_the_full_forward(name):
    """Every component at the last position and the user vector, on padded and unpadded batches, equal the
    model's full forward (run_with_cache), for every depth, attention kind and item side."""
    model = make_model(**CONFIGS[name])
    x, t = padded_batch()
    lp = last_position_pass(model, x, t)
    want, labels = residual_components(model, x, times=t)
    got, got_labels = lp.components()
    assert got_labels == labels
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp.final, model.residual(x, t)[:, -1], rtol=1e-5, atol=1e-6)
    if model.cfg.n_layers:  # the last layer's keys and values at every position, as the model computes them
        _, cache = model.run_with_cache(x, times=t, return_type=None)
        torch.testing.assert_close(lp.values[-1], cache[f"blocks.{model.cfg.n_layers - 1}.attn.hook_v"])
    for i in range(len(x)):  # one history alone, unpadded
        real = x[i] != 0
        alone = last_position_pass(model, x[i][real][None], t[i][real][None])
        torch.testing.assert_close(alone.final[0], lp.final[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["L1", "L3", "learned", "static", "learned+distance+time", "uniform"])
@torch.no_grad()
def test_replacing_at_the_last_position_equals_the_hooked_forward(name):
    model = make_model(**CONFIGS[name])
    x, t = padded_batch(1)
    lp = last_position_pass(model, x, t)
    c = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    L = model.cfg.n_layers
    cases = [({"heads": {"L0H1": None}}, ablated_heads(model, {"L0H1": None}, position=-1)),
             ({"heads": {"L0H0": c}}, ablated_heads(model, {"L0H0": c}, position=-1)),
             ({"heads": {f"L{L - 1}H0": c, "L0H1": None}}, ablated_heads(model, {f"L{L - 1}H0": c, "L0H1": None},
                                                                            position=-1)),
             ({"layers": {0: c}}, ablated_layers(model, {0: c}, position=-1)),
             ({"layers": {l: None for l in range(L)}}, ablated_layers(model, dict.fromkeys(range(L)), position=-1)),
             ({"layers": {L - 1: c}}, ablated_layers(model, {L - 1: c}, position=-1))]
    for kwargs, hooked in cases:
        with hooked:
            want = model.residual(x, t)[:, -1]
        torch.testing.assert_close(final_residual(lp, **kwargs), want, rtol=1e-5, atol=1e-5, msg=str(kwargs))
    assert final_residual(lp) is lp.final


@torch.no_grad()
def test_a_pass_under_an_ablation_hook_ablates_the_lower_layers():
    model = make_model(n_layers=2)
    x, t = padded_batch(2)
    with ablated(model, "L0H1"):
        want = model.residual(x, t)[:, -1]
        got = last_position_pass(model, x, t).final
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_length_batches_cut_the_rows_sorted_by_length_and_cover_every_row_once():
    history = np.array([[0, 0, 1], [2, 3, 4], [0, 5, 6], [0, 0, 7], [8, 9, 1], [0, 0, 2], [0, 0, 3]])
    batches = list(length_batches(history, 3))
    assert [b.tolist() for b in batches] == [[0, 3, 5], [1, 2, 6], [4]]  # lengths 1 1 1 | 3 2 1 | 3
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(history)))


@pytest.fixture(scope="module")
def small_data():
    """A random log of 40 users over 30 items (repeats included) and its test split."""
    import pandas as pd

    from circuits.data.sequences import build_dataset

    rng = np.random.default_rng(5)
    rows = [(f"u{u}", str(i), float(1.7e9 + 37 * t * t)) for u in range(40)
            for t, i in enumerate(rng.integers(1, D_VOCAB, size=rng.integers(3, 15)))]
    ds = build_dataset(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), {}, "t")
    assert ds.d_vocab == D_VOCAB
    return ds


@pytest.mark.parametrize("name", ["L0", "learned", "learned+distance+time", "static"])
def test_model_ranks_equal_one_full_evaluation_per_ablation(small_data, name):
    """The batched ablations of `model_ranks` (one pass for all) against `split_ranks` of `model_scorer` under
    the ablation hooks, one full evaluation each: the same ranks, user by user."""
    from circuits.scoring.evaluator import model_scorer
    from circuits.scoring.metrics import split_ranks

    model = make_model(**CONFIGS[name])
    split = small_data.eval_split("test", model.cfg.n_ctx)
    c = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(4))
    variants, hooks = {}, {}
    if model.cfg.n_layers:
        variants = {"zero L1H0": {"heads": {"L1H0": None}}, "mean L0H1": {"heads": {"L0H1": c}},
                    "layer 0": {"layers": {0: c}}, "all": {"layers": {0: None, 1: c}}}
        hooks = {"zero L1H0": lambda: ablated_heads(model, {"L1H0": None}, position=-1),
                 "mean L0H1": lambda: ablated_heads(model, {"L0H1": c}, position=-1),
                 "layer 0": lambda: ablated_layers(model, {0: c}, position=-1),
                 "all": lambda: ablated_layers(model, {0: None, 1: c}, position=-1)}
    got = model_ranks(model, split, variants)
    for name_, ranks in got.items():
        if name_ == "intact":
            want = split_ranks(model_scorer(model, split), split, D_VOCAB, n_sampled=0)
        else:
            with hooks[name_]():
                want = split_ranks(model_scorer(model, split), split, D_VOCAB, n_sampled=0)
        for protocol in ("full/excluded", "full/included"):
            np.testing.assert_array_equal(ranks[protocol], want[protocol], err_msg=f"{name_} {protocol}")
    assert (got["intact"]["full/excluded"] == D_VOCAB).any()  # unscorable and seen targets rank last (-inf ties)


@pytest.mark.parametrize("name", ["L0", "learned+distance+time", "hybrid"])
def test_training_validation_equals_a_full_evaluation(small_data, name):
    """The training loop's validation (`model_ranks`: the user vectors alone) against `evaluate_split` of
    `model_scorer` (the full forward at every position) in eval mode, under both seen-item policies; the model is
    validated without dropout and handed back in training mode."""
    from circuits.scoring.evaluator import model_scorer
    from circuits.scoring.metrics import evaluate_split
    from circuits.training.loop import validate

    model = make_model(**CONFIGS[name], dropout=0.5).train()
    split = small_data.eval_split("valid", model.cfg.n_ctx)
    for policy in ("excluded", "included"):
        got = validate(model, split, policy)
        assert model.training
        model.eval()
        want = evaluate_split(model_scorer(model, split), split, D_VOCAB, n_sampled=0)[f"full/{policy}"]
        model.train()
        assert got == pytest.approx(want, abs=1e-12), policy
        assert 0 < got["NDCG@10"] < 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-layer run on tiny synthetic journeys (the default model: learned attention plus a time-gap bias)."""
    from circuits.runs import load_run
    from tests.helpers import tiny_journeys, train_tiny

    root = tmp_path_factory.mktemp("fast")
    return load_run(train_tiny(tiny_journeys(root / "data", n_users=60, max_length=14), root / "L2", 2))


def test_one_pass_for_several_readers_equals_a_pass_for_each(tiny_run):
    """The report's shared test pass: the rank table, the ranks of the intact and ablated user vectors and the
    last-position outputs read from one pass equal each one computed in its own pass."""
    from analyses.translation import last_position_outputs, replacements
    from circuits.interp.last_position import OutputReader, RankReader, read_split
    from circuits.interp.ranks import ComponentRanks, rank_arrays

    model, ds = tiny_run.model, tiny_run.dataset()
    test = ds.eval_split("test", model.cfg.n_ctx)
    _, variants = replacements(model, ds.eval_split("valid", model.cfg.n_ctx))
    readers = [ComponentRanks(model, ds, test, exclude_seen=True), RankReader(model, test, variants),
               OutputReader(len(test))]
    read_split(model, test, readers)
    alone = rank_arrays(model, ds, test, exclude_seen=True)
    np.testing.assert_array_equal(readers[0].arrays().rank, alone.rank)
    np.testing.assert_array_equal(readers[0].arrays().target_logit, alone.target_logit)
    ranks = model_ranks(model, test, variants)
    assert ranks.keys() == readers[1].ranks.keys()
    for name in ranks:
        for protocol in ranks[name]:
            np.testing.assert_array_equal(readers[1].ranks[name][protocol], ranks[name][protocol])
    outputs = last_position_outputs(model, test)
    assert list(outputs) == list(readers[2].outputs)
    for name, v in outputs.items():
        torch.testing.assert_close(readers[2].outputs[name], v, rtol=0, atol=0)


def test_translation_ablations_equal_one_full_evaluation_per_ablation(tiny_run):
    """The translation table, every replacement evaluated in one pass, against the computation it replaced: the
    validation means and the fitted constants from full forward passes (hooks), then for each replacement the
    full model under the ablation hook, one split_ranks each."""
    from contextlib import nullcontext

    from analyses.translation import ablations, fit_translation
    from circuits.scoring.evaluator import model_scorer
    from circuits.scoring.metrics import metrics_from_ranks, split_ranks

    model, ds = tiny_run.model, tiny_run.dataset()
    valid, test = ds.eval_split("valid", model.cfg.n_ctx), ds.eval_split("test", model.cfg.n_ctx)
    policy = tiny_run.seen_policy
    table = ablations(model, valid, test, ds.d_vocab, policy).set_index("ablated")

    _, cache = model.run_with_cache(torch.from_numpy(valid.history), times=torch.from_numpy(valid.history_times),
                                    return_type=None)
    heads = {f"L{l}H{h}": cache[f"blocks.{l}.attn.hook_result"][:, -1, h] for l in range(2) for h in range(2)}
    layers = {l: cache[f"blocks.{l}.hook_attn_out"][:, -1] for l in range(2)}
    direct = cache["hook_embed"][:, -1] + cache["hook_pos_embed"][:, -1]
    targets = torch.from_numpy(valid.target)
    fit_all = fit_translation(direct, targets, model.W_U, layers[0].mean(0) + layers[1].mean(0))
    fit_last = fit_translation(cache["blocks.1.hook_resid_pre"][:, -1], targets, model.W_U, layers[1].mean(0))

    def ndcg(context=None) -> float:
        with context or nullcontext():
            ranks = split_ranks(model_scorer(model, test), test, ds.d_vocab, n_sampled=0)[f"full/{policy}"]
        return metrics_from_ranks(ranks)["NDCG@10"]

    want = {name: (ndcg(ablated_heads(model, {name: v.mean(0)}, position=-1)),
                   ndcg(ablated_heads(model, {name: None}, position=-1)), np.nan) for name, v in heads.items()}
    want["L1"] = (ndcg(ablated_layers(model, {0: layers[0].mean(0)}, position=-1)),
                  ndcg(ablated_layers(model, {0: None}, position=-1)), np.nan)
    want["L2"] = (ndcg(ablated_layers(model, {1: layers[1].mean(0)}, position=-1)),
                  ndcg(ablated_layers(model, {1: None}, position=-1)),
                  ndcg(ablated_layers(model, {1: fit_last}, position=-1)))
    want["all attention layers"] = (ndcg(ablated_layers(model, {l: layers[l].mean(0) for l in range(2)}, position=-1)),
                                    ndcg(ablated_layers(model, {0: None, 1: None}, position=-1)),
                                    ndcg(ablated_layers(model, {0: None, 1: fit_all}, position=-1)))
    assert list(table.index) == list(want) and table["intact"].eq(ndcg()).all()
    got = table[["mean_ablated", "zero_ablated", "fitted"]].to_numpy()
    np.testing.assert_allclose(got, np.array(list(want.values())), rtol=0, atol=1e-9)
    assert np.isfinite(got[-2:, 2]).all() and np.isnan(got[:-2, 2]).all()


def test_experiment_sections_from_the_shared_pass_equal_their_own_passes(tiny_run):
    from circuits.interp.last_position import read_split
    from circuits.report.experiments import TestPass, experiment_sections
    from circuits.report.page import render

    ds = tiny_run.dataset()
    test = ds.eval_split("test", tiny_run.model.cfg.n_ctx)
    shared = TestPass(tiny_run, ds, test)
    read_split(tiny_run.model, test, shared.readers)
    assert render("x", "y", experiment_sections(tiny_run, ds, shared)) == \
        render("x", "y", experiment_sections(tiny_run, ds))


def test_the_decomposition_and_the_attention_figures_read_one_forward_pass(tiny_run):
    """A chosen user's one cache (`sequence_cache`, shared by the two sections) gives exactly what each section
    gets from a forward pass of its own on the user's test history."""
    import circuits.interp.decomposition as D
    from circuits.report import sections as S

    model, ds = tiny_run.model, tiny_run.dataset()
    user = str(ds.user_ids[ds.eval_users()[3]])
    start, end = D.visible_window(ds, user, "test", model.cfg.n_ctx)
    with torch.no_grad():
        _, own = model.run_with_cache(torch.tensor(ds.items[start:end])[None],
                                      times=torch.tensor(ds.timestamps[start:end])[None], return_type=None)
    for paths in (False, True):
        a, b = D.decompose_sequence(tiny_run, ds, user, paths=paths), \
            D.decompose_sequence(tiny_run, ds, user, paths=paths, cache=own)
        for key in ("components", "sources", "sequence"):
            assert a[key].equals(b[key]), key
    shared = [f.to_json() for f in S.attention_figures(tiny_run, ds, user, 5)]
    assert shared == [f.to_json() for f in S.attention_figures(tiny_run, ds, user, 5, cache=own)]
    # the decomposition at an earlier query reads the cache of that prefix only
    with pytest.raises(ValueError, match="cache holds activations"):
        D.decompose_sequence(tiny_run, ds, user, pos=2, top=3, cache=own)
    assert D.decompose_sequence(tiny_run, ds, user, pos=2, top=3)["query_position"] == 2


def test_the_seen_item_mask_and_the_training_parts_equal_the_per_row_formulas():
    """`seen_index`/`mask_rows` (no per-row loop), `train_mask` and `train_transition_mask` (no per-item
    temporaries) against the formulas they replaced, on random CSR lists and logs with empty and short users."""
    from circuits.data.sequences import SequenceDataset
    from circuits.scoring.metrics import mask_rows

    rng = np.random.default_rng(0)
    for _ in range(100):
        lens = rng.integers(0, 6, size=rng.integers(1, 12))
        ptr, seen = np.r_[0, np.cumsum(lens)], rng.integers(1, 9, size=lens.sum())
        rows = rng.permutation(len(lens))[: rng.integers(0, len(lens) + 1)]
        want = torch.zeros(len(rows), 9)
        for r, row in enumerate(rows):
            want[r, seen[ptr[row] : ptr[row + 1]]] = float("-inf")
        got = torch.zeros(len(rows), 9)
        mask_rows(got, ptr, seen, rows)
        assert torch.equal(got, want)
        ds = SequenceDataset("t", np.array(["<pad>"] + list("abcdefgh"), dtype=object), np.array(["x"] * 9, dtype=object),
                             np.array([f"u{i}" for i in range(len(lens))], dtype=object), ptr, seen,
                             np.zeros(len(seen)))
        position = np.arange(len(seen)) - np.repeat(ptr[:-1], lens)
        train = position < np.repeat(lens - np.where(lens >= 3, 2, 0), lens)
        np.testing.assert_array_equal(ds.train_mask(), train)
        user = np.repeat(np.arange(len(lens)), lens)
        np.testing.assert_array_equal(ds.train_transition_mask(), train[1:] & train[:-1] & (user[1:] == user[:-1]))


def test_pair_counts_of_a_few_pairs_equal_the_whole_transition_table(small_data):
    from circuits.interp.circuit_pairs import pair_counts

    ds = small_data
    rng = np.random.default_rng(1)
    a, b = rng.choice([3, 8, 20], size=40), rng.integers(1, D_VOCAB, size=40)  # few sources, many targets
    prev, nxt = ds.train_transitions()
    want = np.array([int(((prev == x) & (nxt == y)).sum()) for x, y in zip(a, b)])
    assert "transitions" not in ds._memo
    np.testing.assert_array_equal(pair_counts(ds, a, b), want)  # only the transitions out of a counted
    ds.transition_counts()
    np.testing.assert_array_equal(pair_counts(ds, a, b), want)  # from the dataset's whole table
    assert want.sum() > 0


def test_composition_baseline_in_one_batch_equals_one_pair_at_a_time():
    from transformer_lens.FactoredMatrix import FactoredMatrix
    from transformer_lens.utilities import composition_scores

    from circuits.interp.head_scores import composition

    model = make_model(n_layers=2)
    table = composition(model, n_random=7, seed=3)
    g = torch.Generator().manual_seed(3)

    def rand_factored():
        return FactoredMatrix(torch.randn(16, 8, generator=g), torch.randn(8, 16, generator=g))

    with torch.no_grad():
        want = float(np.mean([composition_scores(rand_factored(), rand_factored(), broadcast_dims=False).item()
                              for _ in range(7)]))
        assert table["baseline"].eq(want).all()
        src, dst = model.OV[0, 1], model.QK[1, 0].T
        score = composition_scores(src, dst, broadcast_dims=False).item()
    row = table[(table["kind"] == "K") & (table["source"] == "L0H1") & (table["target"] == "L1H0")]
    assert row["score"].item() == score and len(table) == 12


def test_fitted_translation_equals_the_fit_through_the_users_vectors():
    """The fit from base W_U computed once equals the fit that multiplies every user's vector in every step."""
    import torch.nn.functional as F

    from analyses.translation import fit_translation

    g = torch.Generator().manual_seed(0)
    base, W_U = torch.randn(300, 8, generator=g), torch.randn(8, 40, generator=g)
    targets, init = torch.randint(1, 40, (300,), generator=g), torch.zeros(8)
    c = init.double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([c], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def loss():
        opt.zero_grad()
        logits = (base.double() + c) @ W_U.double()
        logits[:, 0] = float("-inf")
        value = F.cross_entropy(logits, targets)
        value.backward()
        return value

    opt.step(loss)
    torch.testing.assert_close(fit_translation(base, targets, W_U, init), c.detach().float(), rtol=1e-5, atol=1e-6)


# the analysis commands and train (circuits.embed reads its text encoder's modules before parsing: not this test's)
COMMANDS = ["circuits.train", "circuits.decompose", "circuits.heads", "circuits.pairs", "circuits.evaluate", "circuits.report.__main__",
            "circuits.synthetic", "analyses.order", "analyses.translation", "analyses.same_item",
            "analyses.diagnostics", "analyses.depth", "analyses.causal", "analyses.dag_logits"]
HEAVY = ("torch", "pandas", "plotly", "pyarrow", "duckdb", "faiss", "sentence_transformers", "transformer_lens")


def test_help_imports_nothing_heavy():
    """`python -m circuits.NAME --help` (and `import circuits`) import none of
    torch, pandas, plotly, pyarrow, duckdb, faiss, sentence-transformers, TransformerLens."""
    import subprocess
    import sys

    code = ("import sys, importlib, contextlib, io\n"
            "import circuits\n"
            f"for name in {COMMANDS!r}:\n"
            "    m = importlib.import_module(name)\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            m.main(['--help'])\n"
            "        except SystemExit:\n"
            "            pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_head_ablation_table_equals_one_full_evaluation_per_ablation(tiny_run):
    """`heads --ablate`: the last layer's heads replayed at the last position, the others in a pass each, against
    the full model under the ablation hook (at every position), one split_ranks each."""
    from circuits.interp.ablation import ablation_table, mean_head_results
    from circuits.scoring.evaluator import model_scorer
    from circuits.scoring.metrics import metrics_from_ranks, split_ranks

    model, ds = tiny_run.model, tiny_run.dataset()
    valid = ds.eval_split("valid", model.cfg.n_ctx)
    table = ablation_table(model, valid, ds.d_vocab, tiny_run.seen_policy)
    means = mean_head_results(model, torch.from_numpy(valid.history), torch.from_numpy(valid.history_times))

    def ranks():
        return split_ranks(model_scorer(model, valid), valid, ds.d_vocab, n_sampled=0)[f"full/{tiny_run.seen_policy}"]

    base = ranks()
    assert len(table) == 8
    for _, row in table.iterrows():
        with ablated(model, row["head"], means[row["head"]] if row["mode"] == "mean" else None):
            r = ranks()
        assert row["ablated_NDCG@10"] == pytest.approx(metrics_from_ranks(r)["NDCG@10"], abs=1e-12), tuple(row)
        assert row["mean_log2_rank_change"] == pytest.approx(float(np.mean(np.log2(r) - np.log2(base))), abs=1e-12)
