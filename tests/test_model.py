import math

import pytest
import torch

from circuits.config import ModelConfig
from circuits.model import build_model, time_buckets
from tests.helpers import ATTENTION_VARIANTS, example_times, with_random_distance_weights


def cfg(**kw):
    base = dict(d_vocab=13, n_ctx=8, n_layers=2, n_heads=3, d_model=16, d_head=5, dropout=0.0)
    return ModelConfig(**{**base, **kw})


def reference_bucket(gap: float, is_self: bool, n_buckets: int) -> int:
    """Time bucket written out: self 0, under a second 1, then 2 + floor(log2(seconds)), capped."""
    if is_self:
        return 0
    if gap < 1:
        return 1
    b, g = 2, gap
    while g >= 2:
        g, b = g / 2, b + 1
    return min(b, n_buckets - 1)


def reference_forward(model, seq: list[int], times: list[float] | None = None) -> torch.Tensor:
    """Unpadded sequence, one head at a time, explicit softmax over keys ≤ query: logits [pos, d_vocab]."""
    c = model.cfg
    resid = []
    for t, x in enumerate(seq):
        r = model.W_E[x].clone()
        if model.W_pos is not None:
            r = r + model.W_pos[t]
        resid.append(r)
    for block in model.blocks:
        a = block.attn
        new = []
        for q_pos in range(len(seq)):
            out = resid[q_pos].clone()
            for h in range(c.n_heads):
                scores = [0.0] * (q_pos + 1)
                if c.attention == "learned":
                    q = resid[q_pos] @ a.W_Q[h]
                    scores = [float(q @ (resid[k] @ a.W_K[h])) / math.sqrt(c.d_head) for k in range(q_pos + 1)]
                if c.attention == "static" or c.static_bias:  # bucket of the distance d: 0, 1, 2-3, 4-7, ...; of the
                    for k in range(q_pos + 1):  # time gap
                        d = q_pos - k
                        if c.distance_buckets:
                            scores[k] += float(a.W_dist[h, 0 if d == 0 else min(c.distance_buckets - 1,
                                                                                  int(math.log2(d)) + 1)])
                        if c.time_buckets:
                            scores[k] += float(a.W_time[h, reference_bucket(times[q_pos] - times[k], d == 0,
                                                                            c.time_buckets)])
                m = max(scores)
                w = [math.exp(s - m) for s in scores]
                z = sum(wk / sum(w) * (resid[k] @ a.W_V[h]) for k, wk in enumerate(w))
                out = out + z @ a.W_O[h]
            new.append(out)
        resid = new
    return torch.stack([r @ model.W_U for r in resid])


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("positional", [True, False])
@pytest.mark.parametrize("attention", list(ATTENTION_VARIANTS))
def test_forward_matches_per_head_loop(n_layers, positional, attention):
    kw = {"distance_buckets": 3, **ATTENTION_VARIANTS[attention]}
    model = with_random_distance_weights(build_model(cfg(n_layers=n_layers, positional=positional, **kw), seed=1).eval(),
                                         seed=5)
    seq = [3, 1, 4, 1, 5, 9, 2]
    times = example_times(len(seq))
    with torch.no_grad():
        got = model(torch.tensor([seq]), times)[0]
        want = reference_forward(model, seq, times[0].tolist())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("attention", list(ATTENTION_VARIANTS))
def test_left_padding_gives_same_logits_at_real_positions(n_layers, attention):
    model = with_random_distance_weights(build_model(cfg(n_layers=n_layers, **ATTENTION_VARIANTS[attention]), seed=2).eval(),
                                         seed=5)
    short, long = [5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8]
    batch = torch.tensor([[0] * 5 + short, long])
    t_long = example_times(8)[0]
    times = torch.stack([torch.cat([torch.zeros(5, dtype=torch.float64), t_long[5:]]), t_long])  # padding: time 0
    with torch.no_grad():
        padded = model(batch, times)
        alone = model(torch.tensor([short]), times[:1, 5:])
        cache = model.run_with_cache(batch, times=times)[1]
    torch.testing.assert_close(padded[0, 5:], alone[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(padded[1], model(torch.tensor([long]), times[1:])[0], atol=1e-6, rtol=1e-6)
    for l in range(n_layers):  # padded keys get no attention; padded queries attend nowhere
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]
        assert pattern[0, :, :, :5].abs().max() == 0
        torch.testing.assert_close(pattern[0, :, 5:].sum(-1), torch.ones(3, 3))


def test_no_bias_no_layernorm_and_transformerlens_names():
    model = build_model(cfg(n_layers=2))
    names = {n for n, _ in model.named_parameters()}
    assert names == {"W_E", "W_pos", "W_U"} | {f"blocks.{l}.attn.W_{m}" for l in range(2) for m in "QKVO"}
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert model.W_Q.shape == (2, 3, 16, 5) and model.W_O.shape == (2, 3, 5, 16)
    hooks = set(model.hook_dict)
    for l in range(2):
        for h in ("hook_resid_pre", "hook_resid_post", "hook_attn_out"):
            assert f"blocks.{l}.{h}" in hooks
        for h in ("q", "k", "v", "attn_scores", "pattern", "z", "result"):
            assert f"blocks.{l}.attn.hook_{h}" in hooks
    assert {"hook_embed", "hook_pos_embed"} <= hooks
    zero = build_model(cfg(n_layers=0))
    assert type(zero) is type(model) and len(zero.blocks) == 0


def test_factored_circuits_equal_dense_products():
    model = build_model(cfg(n_layers=2))
    torch.testing.assert_close(model.OV.AB, model.W_V @ model.W_O)
    torch.testing.assert_close(model.QK.AB, model.W_Q @ model.W_K.transpose(-1, -2))
    torch.testing.assert_close(model.blocks[1].attn.OV.AB, model.W_V[1] @ model.W_O[1])


def test_head_results_and_embeddings_add_up_to_the_logits():
    model = build_model(cfg(n_layers=2), seed=3).eval()
    x = torch.tensor([[0, 0, 4, 2, 7, 7, 1]])
    with torch.no_grad():
        logits, cache = model.run_with_cache(x)
    resid = cache["hook_embed"] + cache["hook_pos_embed"]
    resid = resid + sum(cache[f"blocks.{l}.attn.hook_result"].sum(2) for l in range(2))
    torch.testing.assert_close((resid @ model.W_U)[0, 2:], logits[0, 2:], atol=1e-5, rtol=1e-5)


def test_tied_unembedding_is_the_embedding_transpose_and_makes_bigrams_symmetric():
    model = build_model(cfg(n_layers=0, tied=True, positional=False))
    assert "W_U" not in dict(model.named_parameters())
    table = model.W_E @ model.W_U
    torch.testing.assert_close(table, table.T)


def test_same_seed_same_weights_and_config_validation():
    a, b = build_model(cfg(), seed=7), build_model(cfg(), seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="n_layers"):
        cfg(n_layers=-1)
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        a(torch.ones(1, 9, dtype=torch.long))


def test_static_attention_depends_only_on_distance_and_has_no_qk():
    model = with_random_distance_weights(build_model(cfg(attention="static"), seed=3).eval(), seed=5)
    with torch.no_grad():
        a = model.run_with_cache(torch.tensor([[1, 2, 3, 4, 5]]))[1]["blocks.0.attn.hook_pattern"]
        b = model.run_with_cache(torch.tensor([[9, 9, 7, 1, 12]]))[1]["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(a, b)
    assert not hasattr(model.blocks[0].attn, "W_Q")
    with pytest.raises(ValueError, match="no QK"):
        _ = model.QK
    with pytest.raises(ValueError, match="attention must be"):
        cfg(attention="rotary")


def test_time_buckets_match_the_written_out_rule():
    times = example_times(12, batch=2)
    times[1] = times[1].flip(0).neg()  # a second row with other gaps
    got = time_buckets(times, 32)
    for b in range(2):
        for q in range(12):
            for k in range(q + 1):
                want = reference_bucket(float(times[b, q] - times[b, k]), q == k, 32)
                assert got[b, q, k] == want, (b, q, k)
    assert got[0].max() < 32 and int(time_buckets(times, 5).max()) == 4  # capped
    future = torch.ones(12, 12, dtype=torch.bool).triu(1)
    assert (got[:, future] == 1).all()  # a key later than the query: a gap of 0 s (masked anyway)
    torch.testing.assert_close(time_buckets(times, 32, last_query=True), got[:, -1:, :], rtol=0, atol=0)


def test_time_buckets_at_powers_of_two_and_just_below():
    gaps = [0.0, 0.5, 1.0 - 1e-9, 1.0, 1.5, 2.0 - 1e-9, 2.0, 3.0, 4.0, 1023.999, 1024.0, 2.0**20, 2.0**20 + 0.25, 2.0**28,
            2.0**29 - 1, 2.0**29, 2.0**31, 3e9]
    for gap in gaps:
        times = torch.tensor([[1.7e9, 1.7e9 + gap]], dtype=torch.float64)
        assert int(time_buckets(times, 32)[0, 1, 0]) == reference_bucket(float(times[0, 1] - times[0, 0]), False, 32), gap


def test_time_attention_depends_only_on_time_gaps():
    model = with_random_distance_weights(build_model(cfg(**ATTENTION_VARIANTS["time"]), seed=3).eval(), seed=5)
    times = example_times(5)

    def pattern(items, t):
        with torch.no_grad():
            return model.run_with_cache(torch.tensor([items]), times=t)[1]["blocks.1.attn.hook_pattern"]

    torch.testing.assert_close(pattern([1, 2, 3, 4, 5], times), pattern([9, 9, 7, 1, 12], times))  # items: no effect
    torch.testing.assert_close(pattern([1, 2, 3, 4, 5], times), pattern([1, 2, 3, 4, 5], times + 1e6))  # only gaps
    assert not torch.allclose(pattern([1, 2, 3, 4, 5], times), pattern([1, 2, 3, 4, 5], example_times(6)[:, 1:]))
    with pytest.raises(ValueError, match="time gaps"):
        model(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="float64"):  # float32 holds unix seconds to the nearest 128 s
        model(torch.tensor([[1, 2, 3]]), torch.tensor([[1.7e9, 1.7e9 + 60, 1.7e9 + 120]]))
    with pytest.raises(ValueError, match="needs distance buckets, time buckets or both"):
        cfg(attention="static", distance_buckets=0)
