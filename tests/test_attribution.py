import numpy as np
import pytest
import torch

from circuits.config import ModelConfig
from circuits.interp.attribution import component_logits, path_components, residual_components, target_ranks
from circuits.model import build_model
from tests.helpers import ATTENTION_VARIANTS, example_times, with_random_distance_weights

X = torch.tensor([[0, 0, 4, 2, 7, 7, 1, 3], [5, 6, 1, 2, 3, 4, 5, 6]])
T = example_times(8, batch=2)


def model_with(n_layers, positional=True, attention="learned"):
    cfg = ModelConfig(d_vocab=11, n_ctx=8, n_layers=n_layers, n_heads=2, d_model=12, d_head=4, positional=positional,
                      **ATTENTION_VARIANTS[attention])
    return with_random_distance_weights(build_model(cfg, seed=n_layers).eval(), seed=1)


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("positional", [True, False])
@pytest.mark.parametrize("attention", list(ATTENTION_VARIANTS))
def test_components_sum_to_the_logits(n_layers, positional, attention):
    model = model_with(n_layers, positional, attention)
    with torch.no_grad():
        logits = model(X, T)
    for decompose in (residual_components, path_components):
        for pos in (-1, 4):
            stack, labels = decompose(model, X, pos, times=T)
            assert len(labels) == stack.shape[0] and len(set(labels)) == len(labels)
            torch.testing.assert_close(component_logits(model, stack).sum(0), logits[:, pos], atol=1e-4, rtol=1e-4)


def test_labels_name_the_paths():
    _, direct = residual_components(model_with(2), X)
    assert direct == ["embed", "pos", "L0H0", "L0H1", "L1H0", "L1H1"]
    _, paths = path_components(model_with(2), X)
    assert paths[:4] == ["embed", "pos", "L0H0", "L0H1"]
    assert "L1H1<-L0H0" in paths and "L1H0<-embed" in paths and len(paths) == 4 + 2 * 4


def test_path_terms_of_a_head_add_up_to_its_direct_component():
    model = model_with(2)
    direct, dl = residual_components(model, X)
    paths, pl = path_components(model, X)
    for head in ("L1H0", "L1H1"):
        total = sum(paths[i] for i, name in enumerate(pl) if name.startswith(head + "<-"))
        torch.testing.assert_close(total, direct[dl.index(head)], atol=1e-5, rtol=1e-5)


def test_zero_ablating_a_last_layer_head_removes_exactly_its_component():
    model = model_with(2)
    stack, labels = residual_components(model, X)

    def zero_head(result, hook):
        result[:, :, 1] = 0.0
        return result

    with torch.no_grad():
        ablated = model.run_with_hooks(X, fwd_hooks=[("blocks.1.attn.hook_result", zero_head)])
    expected = component_logits(model, stack).sum(0) - component_logits(model, stack[[labels.index("L1H1")]])[0]
    torch.testing.assert_close(ablated[:, -1], expected, atol=1e-4, rtol=1e-4)


def test_target_ranks_match_a_sort():
    logits = torch.randn(3, 4, 11)
    target = torch.tensor([1, 5, 10, 3])
    ranks = target_ranks(logits, target)
    for c in range(3):
        for b in range(4):
            order = logits[c, b, 1:].argsort(descending=True) + 1
            assert ranks[c, b] == (order == target[b]).nonzero().item() + 1


@pytest.mark.parametrize("attention", ["learned", "time"])
def test_rank_table_matches_per_user_dense_computation(attention):
    import numpy as np
    import pandas as pd

    from circuits.data.sequences import build_dataset
    from circuits.interp.ranks import rank_summary, rank_table

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", str(i), t**3 + u) for u in range(12) for t, i in enumerate(rng.integers(1, 10, size=7))]
    ds = build_dataset(pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": float}), {}, "t")
    cfg = ModelConfig(d_vocab=ds.d_vocab, n_ctx=6, n_layers=2, n_heads=2, d_model=8, d_head=4,
                      **ATTENTION_VARIANTS[attention])
    model = with_random_distance_weights(build_model(cfg, 0).eval(), seed=2)
    split = ds.eval_split("test", 6)
    table = rank_table(model, ds, split)
    for r in range(len(split)):
        u = split.users[r]
        full_history = ds.items[ds.offsets[u] : ds.offsets[u + 1] - 1]  # every item before the test target
        hist = torch.from_numpy(full_history[-6:])[None]  # the last n_ctx, unpadded
        times = torch.from_numpy(ds.timestamps[ds.offsets[u] : ds.offsets[u + 1] - 1][-6:])[None]
        with torch.no_grad():
            full = model(hist, times)[0, -1, 1:]
        want = 1 + (full > full[split.target[r] - 1]).sum().item()
        got = table[(table.user_id == ds.user_ids[split.users[r]]) & (table.component == "L0+L1+L2")]["rank"].item()
        assert got == want
    summary = rank_summary(table)
    assert list(summary.index[:6]) == ["embed", "pos", "L0H0", "L0H1", "L1H0", "L1H1"]
    assert 0 <= summary.attrs["share_L0+L1_better_than_L0"] <= 1


@pytest.mark.parametrize("attention", ["learned", "distance+time"])
def test_source_contributions_sum_to_each_heads_target_logit(attention):
    from circuits.interp.sources import attention_sources, same_item_shares

    model = model_with(2, attention=attention)
    seq = torch.tensor([4, 2, 7, 7, 1, 3, 7])
    target = 5
    src = attention_sources(model, seq, target, timestamps=np.arange(7) * 60.0)
    stack, labels = residual_components(model, seq[None], times=torch.arange(7, dtype=torch.float64)[None] * 60.0)
    head_logits = component_logits(model, stack)[:, 0, target]
    for head, part in src.groupby("head"):
        assert abs(part["contribution"].sum() - head_logits[labels.index(head)].item()) < 1e-4
        assert abs(part["weight"].sum() - 1) < 1e-5
    assert src.loc[src.key_pos == 0, "gap"].iloc[0] == 360.0
    shares = same_item_shares(src)
    want = src[(src["head"] == "L0H0") & src["same_item"]]["weight"].sum()
    assert abs(shares.loc["L0H0", "same_item_share"] - want) < 1e-9


def test_groups_are_the_same_with_direct_or_path_components():
    from circuits.interp.attribution import with_groups

    model = model_with(2)
    direct, dl = with_groups(*residual_components(model, X), 2)
    paths, pl = with_groups(*path_components(model, X), 2)
    for g in ("L0", "L1", "L2", "L0+L1", "L0+L1+L2"):
        torch.testing.assert_close(direct[dl.index(g)], paths[pl.index(g)], atol=1e-5, rtol=1e-5)


def test_decompositions_carry_no_autograd_graph():
    for decompose in (residual_components, path_components):
        stack, _ = decompose(model_with(2), X)
        assert not stack.requires_grad


def test_rank_table_does_not_depend_on_the_block_size(monkeypatch):
    import pandas as pd

    import circuits.interp.ranks as ranks
    from circuits.data.sequences import build_dataset

    rng = np.random.default_rng(1)
    rows = [(f"u{u}", str(i), t) for u in range(20) for t, i in enumerate(rng.integers(1, 12, size=6))]
    ds = build_dataset(pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": float}), {}, "t")
    model = build_model(ModelConfig(d_vocab=ds.d_vocab, n_ctx=5, n_layers=1, n_heads=2, d_model=8, d_head=4), 0).eval()
    split = ds.eval_split("valid", 5)
    whole = ranks.rank_table(model, ds, split)
    monkeypatch.setattr(ranks, "MAX_USERS_PER_BLOCK", 3)
    pd.testing.assert_frame_equal(whole, ranks.rank_table(model, ds, split))
