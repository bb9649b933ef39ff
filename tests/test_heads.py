import numpy as np
import pytest
import torch

from circuits.config import ModelConfig
from circuits.interp.head_scores import composition, head_scores, induction_scores, positional_share, repeated_sequences
from circuits.model import build_model


def model_with(n_layers=2, d_vocab=23):
    return build_model(ModelConfig(d_vocab=d_vocab, n_ctx=12, n_layers=n_layers, n_heads=2, d_model=8, d_head=4), 1).eval()


@torch.no_grad()
def test_scores_match_dense_computations():
    model = model_with()
    histories = torch.randint(1, 23, (6, 10))
    scores = head_scores(model, histories)
    E, U = model.W_E, model.W_U
    for l in range(2):
        for h in range(2):
            a = model.blocks[l].attn
            ov = (E @ a.W_V[h] @ a.W_O[h] @ U)[1:, 1:]
            eig = torch.linalg.eigvals(ov.double())
            row = scores.loc[f"L{l}H{h}"]
            assert abs(row.ov_copying - float(eig.sum().real / eig.abs().sum())) < 1e-4
            assert abs(row.ov_self_top - float((ov.argmax(1) == torch.arange(22)).double().mean())) < 1e-9
            qk = (E @ a.W_Q[h] @ a.W_K[h].T @ E.T)[1:, 1:]
            assert abs(row.qk_self_top - float((qk.argmax(1) == torch.arange(22)).double().mean())) < 1e-9
            bigram = (E @ U)[1:, 1:]
            corr = np.mean([np.corrcoef(ov[i].detach(), bigram[i].detach())[0, 1] for i in range(22)])
            assert abs(row.ov_bigram_corr - corr) < 1e-6


@torch.no_grad()
@pytest.mark.parametrize("attention", ["learned", "learned+time", "learned+distance", "learned+distance+time"])
@pytest.mark.parametrize("positional", [True, False])
@pytest.mark.parametrize("batch", [2, 64])
def test_positional_share_against_a_per_query_loop(attention, positional, batch):
    """For each real query with ≥ 2 visible keys: the scores' variance across keys from the terms that involve
    W_pos (q_full·k_full − q_content·k_content) and a distance bias, against that of the rest (content-only scores
    and a time-gap bias), with numpy; histories of many lengths, in batches of `batch` of similar length."""
    from circuits.model import distance_buckets, time_buckets
    from tests.helpers import ATTENTION_VARIANTS, example_times, with_random_distance_weights

    variants = {**ATTENTION_VARIANTS, "learned+distance": {"attention": "learned", "static_bias": True,
                                                           "distance_buckets": 3, "time_buckets": 0}}
    cfg = ModelConfig(d_vocab=23, n_ctx=12, n_layers=2, n_heads=2, d_model=8, d_head=4, positional=positional,
                      **variants[attention])
    model = with_random_distance_weights(build_model(cfg, 1).eval(), seed=2)
    histories = torch.randint(1, 23, (7, 10), generator=torch.Generator().manual_seed(0))
    for row, pad in enumerate((4, 0, 8, 1, 0, 6, 3)):  # left padding
        histories[row, :pad] = 0
    times = example_times(10, batch=7)
    if cfg.static_over == [] and not positional:
        assert set(positional_share(model, histories, times).values()) == {0.0}
        return
    got = positional_share(model, histories, times, batch=batch)
    _, cache = model.run_with_cache(histories, times=times)
    pos = cache["hook_pos_embed"].double().numpy() if positional else np.zeros((7, 10, 8))
    for l, block in enumerate(model.blocks):
        resid = cache[f"blocks.{l}.hook_resid_pre"].double().numpy()
        for h in range(2):
            W_Q, W_K = block.attn.W_Q[h].double().numpy(), block.attn.W_K[h].double().numpy()
            shares = []
            for b in range(len(histories)):
                real = np.flatnonzero(histories[b].numpy() != 0)
                dist = np.zeros((10, 10)) if "distance" not in cfg.static_over else \
                    block.attn.W_dist[h][distance_buckets(len(real), cfg.distance_buckets)].double().numpy()
                gap = np.zeros((10, 10)) if "time" not in cfg.static_over else \
                    block.attn.W_time[h][time_buckets(times[b : b + 1, real], cfg.time_buckets)[0]].double().numpy()
                for i, q in enumerate(real[1:], start=1):
                    keys = real[real <= q]
                    content = resid[b] - pos[b]
                    full = (resid[b, q] @ W_Q) @ (resid[b, keys] @ W_K).T / np.sqrt(4)
                    content_qk = (content[q] @ W_Q) @ (content[keys] @ W_K).T / np.sqrt(4)
                    v_pos = np.var(full - content_qk + dist[i, : i + 1])
                    v_content = np.var(content_qk + gap[i, : i + 1])
                    shares.append(v_pos / (v_pos + v_content))
            assert got[f"L{l}H{h}"] == pytest.approx(np.mean(shares), rel=1e-5)


@torch.no_grad()
def test_positional_share_without_a_query_of_two_keys_is_nan():
    model = model_with()
    histories = torch.zeros(3, 6, dtype=torch.long)
    histories[:, -1] = torch.tensor([3, 4, 5])  # one item each: no query sees two keys
    assert all(np.isnan(v) for v in positional_share(model, histories).values())


@torch.no_grad()
def test_row_stats_against_dense_rows_for_sampled_items_and_small_gram_blocks(monkeypatch):
    """`_row_stats` over a sample of source items and with Gram matrices summed over many column blocks, against the
    dense tables in float64 (offset rows: the centring must not lose the spread)."""
    import circuits.interp.head_scores as hs

    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(41, 5, generator=g), torch.randn(5, 41, generator=g)
    ref_left, ref_right = torch.randn(41, 7, generator=g), torch.randn(7, 41, generator=g)
    right[0] += 30.0  # a large common offset in every row's scores (left[:, 0] times it)
    rows = torch.tensor([1, 4, 5, 17, 40])
    S = (left.double() @ right.double())[:, 1:]
    B = (ref_left.double() @ ref_right.double())[:, 1:]
    want_corr = np.mean([np.corrcoef(S[i], B[i])[0, 1] for i in rows.tolist()])
    want_top = float(np.mean([int(S[i].argmax()) + 1 == i for i in rows.tolist()]))
    for columns in (2**16, 3):
        monkeypatch.setattr(hs, "GRAM_COLUMNS", columns)
        top, corr = hs._row_stats(left, right, (ref_left, ref_right), rows)
        assert corr == pytest.approx(want_corr, abs=1e-9) and top == want_top


@torch.no_grad()
def test_layer_inputs_are_the_cached_ones():
    from circuits.interp.last_position import layer_inputs
    from tests.helpers import ATTENTION_VARIANTS, example_times

    for n_layers, positional in ((1, True), (3, True), (2, False)):
        cfg = ModelConfig(d_vocab=23, n_ctx=12, n_layers=n_layers, n_heads=2, d_model=8, d_head=4,
                          positional=positional, **ATTENTION_VARIANTS["learned+time"])
        model = build_model(cfg, 1).eval()
        x, t = torch.randint(1, 23, (3, 9)), example_times(9, batch=3)
        x[0, :3] = 0
        pos, inputs = layer_inputs(model, x, t)
        _, cache = model.run_with_cache(x, times=t)
        if positional:
            torch.testing.assert_close(pos, cache["hook_pos_embed"], rtol=0, atol=0)
        else:
            assert pos is None
        assert len(inputs) == n_layers
        for l in range(n_layers):
            torch.testing.assert_close(inputs[l], cache[f"blocks.{l}.hook_resid_pre"], rtol=0, atol=0)


@torch.no_grad()
def test_positional_share_is_0_without_positions_and_1_without_content():
    model = model_with(n_layers=1)
    histories = torch.randint(1, 23, (4, 8))
    model.W_pos.zero_()
    assert all(v == pytest.approx(0.0) for v in positional_share(model, histories).values())
    model = model_with(n_layers=1)
    model.W_E[:] = model.W_E[1]  # every item the same: the scores vary across keys by position only
    assert all(v == pytest.approx(1.0) for v in positional_share(model, histories).values())


def test_induction_score_reads_the_key_after_the_earlier_copy():
    model = model_with()
    x = repeated_sequences(23, 5, 3)
    assert torch.equal(x[:, :5], x[:, 5:]) and all(len(set(r[:5].tolist())) == 5 for r in x)

    def induction_pattern(pattern, hook):  # every query attends to the induction key only
        p = torch.zeros_like(pattern)
        for q in range(10):
            p[:, :, q, q - 4 if q >= 5 else q] = 1.0
        return p

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", induction_pattern)]):
        scores = induction_scores(model, half=5, n=3)
    assert scores.loc["L1H0", "induction"] == pytest.approx(1.0)
    assert scores.loc["L0H0", "induction"] < 1.0


def test_composition_scores_against_dense_products_and_baseline():
    model = model_with()
    comp = composition(model, n_random=10)
    assert set(comp.kind) == {"Q", "K", "V"} and len(comp) == 3 * 2 * 2
    row = comp[(comp.kind == "V") & (comp.source == "L0H1") & (comp.target == "L1H0")].iloc[0]
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    left, right = a0.W_V[1] @ a0.W_O[1], a1.W_V[0] @ a1.W_O[0]
    want = (left @ right).norm() / (left.norm() * right.norm())
    assert abs(row.score - want.item()) < 1e-5 and row.excess == pytest.approx(row.score - row.baseline)
    assert composition(model_with(1)).empty


def test_an_ablated_heads_component_is_zero_and_mean_ablation_uses_the_mean():
    from circuits.interp.ablation import ablated, mean_head_results
    from circuits.interp.attribution import residual_components

    model = model_with()
    x = torch.randint(1, 23, (4, 9))
    with ablated(model, "L0H1"):
        stack, labels = residual_components(model, x)
    assert stack[labels.index("L0H1")].abs().max() == 0
    assert stack[labels.index("L0H0")].abs().max() > 0
    means = mean_head_results(model, x)
    with ablated(model, "L1H0", means["L1H0"]):
        stack, labels = residual_components(model, x)
    torch.testing.assert_close(stack[labels.index("L1H0")], means["L1H0"].expand(4, -1))
    _, cache = model.run_with_cache(x)  # hooks are gone after the block
    assert cache["blocks.0.attn.hook_result"][:, :, 1].abs().max() > 0


def test_static_weights_list_every_bucket_with_labels_that_match_the_bucketing():
    from circuits.config import ModelConfig
    from circuits.interp.head_scores import bucket_labels, static_weights
    from circuits.model import build_model, distance_buckets, time_buckets
    from tests.helpers import with_random_distance_weights

    cfg = ModelConfig(d_vocab=9, n_ctx=12, n_layers=2, n_heads=2, d_model=8, d_head=4, attention="static",
                      distance_buckets=5, time_buckets=7)
    model = with_random_distance_weights(build_model(cfg, 0), seed=3)
    w = static_weights(model)
    assert len(w) == 2 * 2 * (5 + 7)
    got = w[(w["head"] == "L1H0") & (w["kind"] == "time")]["score"].to_numpy()
    assert torch.equal(torch.tensor(got, dtype=torch.float32), model.blocks[1].attn.W_time[0].detach())
    # each label names the gaps that fall in its bucket: the lower end of bucket b maps to b
    dist = distance_buckets(12, 5)[:, 0]  # query q, key 0: distance q
    assert bucket_labels("distance", 5) == ["self", "1 back", "2–3 back", "4–7 back", "≥ 8 back"]
    assert [int(dist[d]) for d in (0, 1, 2, 3, 4, 7, 8, 11)] == [0, 1, 2, 2, 3, 3, 4, 4]
    labels = bucket_labels("time", 7)
    assert labels[:4] == ["self", "< 1 s", "[1 s, 2 s)", "[2 s, 4 s)"] and labels[-1] == "≥ 16 s"
    for b, gap in ((1, 0.5), (2, 1.0), (2, 1.99), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (6, 1e6)):
        assert int(time_buckets(torch.tensor([[0.0, gap]], dtype=torch.float64), 7)[0, 1, 0]) == b, (b, gap)
