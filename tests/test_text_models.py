"""Text and hybrid item sides: the effective W_E / W_U against hand-written products, exact decomposition,
the training loss, saving and loading."""

import pytest
import torch

from circuits.config import ModelConfig
from circuits.errors import UserError
from circuits.interp.attribution import component_logits, path_components, residual_components
from circuits.model import build_model
from circuits.training.loss import next_item_loss
from tests.helpers import ITEM_SIDE_VARIANTS, example_times, model_with_sides, text_vectors

X = torch.tensor([[0, 0, 4, 2, 7, 7, 1, 3], [5, 6, 1, 2, 3, 4, 5, 6]])


def reference_matrices(model):
    """W_E [d_vocab, d_model] and W_U [d_model, d_vocab] written out from the parameters, side by side."""
    cfg, sd = model.cfg, dict(model.state_dict())
    E = sd["E_text"] if cfg.uses_text else None
    W_E = {"id": lambda: sd["W_E"], "text": lambda: E @ sd["W_in"],
           "hybrid": lambda: E @ sd["W_in"] + sd["W_E_id"]}[cfg.embed_side]()
    W_U = {"id": lambda: sd["W_U"], "text": lambda: sd["W_out"] @ E.T,
           "hybrid": lambda: sd["W_out"] @ E.T + sd["W_U_id"]}[cfg.unembed_side]()
    return W_E, W_U


@pytest.mark.parametrize("side", list(ITEM_SIDE_VARIANTS))
def test_zero_layer_logits_are_the_written_out_bigram_product(side):
    model = model_with_sides(side, n_layers=0)
    W_E, W_U = reference_matrices(model)
    x = torch.tensor([[3, 1, 9]])
    expected = (W_E[x] + model.W_pos[:3]) @ W_U
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.W_E, W_E)
        torch.testing.assert_close(model.W_U, W_U)
        idx = torch.tensor([4, 1, 4, 10])
        torch.testing.assert_close(model.embed_items(idx), W_E[idx])
        torch.testing.assert_close(model.unembed_columns(idx), W_U[:, idx])


@pytest.mark.parametrize("side", list(ITEM_SIDE_VARIANTS))
@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("attention", ["learned", "time"])
def test_components_sum_to_the_logits_for_every_item_side(side, n_layers, attention):
    extra = {"attention": "static", "distance_buckets": 0, "time_buckets": 6} if attention == "time" else {}
    model = model_with_sides(side, n_layers, **extra)
    T = example_times(8, batch=2) if attention == "time" else None
    with torch.no_grad():
        logits = model(X, T)
    for decompose in (residual_components, path_components):
        for pos in (-1, 4):
            stack, _ = decompose(model, X, pos, times=T)
            torch.testing.assert_close(component_logits(model, stack).sum(0), logits[:, pos], atol=1e-4, rtol=1e-4)


def test_text_factors_are_factored_matrices_of_the_text_parts():
    model = model_with_sides("hybrid", n_layers=1)
    sd = model.state_dict()
    torch.testing.assert_close(model.W_E_text.AB, sd["E_text"] @ sd["W_in"])
    torch.testing.assert_close(model.W_U_text.AB, sd["W_out"] @ sd["E_text"].T)
    with pytest.raises(ValueError):
        _ = model_with_sides("id", n_layers=1).W_E_text


@pytest.mark.parametrize("side", ["text", "hybrid"])
def test_sampled_softmax_scores_the_same_columns_as_the_full_unembedding(side, monkeypatch):
    """The sampled loss reads W_U one column at a time; with the negatives fixed it must equal the loss
    computed from the whole W_U by hand."""
    model = model_with_sides(side, n_layers=1)
    y = torch.tensor([[0, 0, 2, 7, 7, 1, 3, 9], [6, 1, 2, 3, 4, 5, 6, 2]])
    log_q = torch.full((11,), -2.3)
    neg = torch.tensor([3, 5, 8])
    monkeypatch.setattr(torch, "multinomial", lambda *a, **k: neg)
    loss = next_item_loss(model, X, y, n_negatives=3, log_q=log_q)
    with torch.no_grad():
        r = model.residual(X)[y != 0]
        t = y[y != 0]
        W_U = model.W_U
        logits = torch.cat([(r * W_U[:, t].T).sum(-1, keepdim=True) + 2.3, r @ W_U[:, neg] + 2.3], 1)
        logits[:, 1:] = logits[:, 1:].masked_fill(neg[None] == t[:, None], float("-inf"))
        expected = torch.nn.functional.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))
    torch.testing.assert_close(loss, expected)


def test_text_embeddings_are_frozen_and_saved_with_the_weights(tmp_path):
    from safetensors.torch import load_file

    from circuits.model import AttnOnlyTransformer
    from circuits.runs import save_weights

    model = model_with_sides("hybrid", n_layers=1)
    assert "E_text" not in dict(model.named_parameters()) and "E_text" in model.state_dict()
    assert torch.all(model.E_text[0] == 0)  # padding has no text
    save_weights(model, tmp_path / "m.safetensors")
    back = AttnOnlyTransformer(model.cfg)
    back.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    torch.testing.assert_close(back.eval()(X), model(X))


def test_config_refuses_inconsistent_text_settings():
    with pytest.raises(UserError, match="needs text embeddings"):
        ModelConfig(d_vocab=5, embed_side="text")
    with pytest.raises(UserError, match="text or hybrid"):
        ModelConfig(d_vocab=5, d_text=4)
    with pytest.raises(UserError, match="tied"):
        ModelConfig(d_vocab=5, unembed_side="text", d_text=4, tied=True)
    with pytest.raises(ValueError, match="E_text of shape"):
        build_model(ModelConfig(d_vocab=5, embed_side="text", d_text=4), E_text=text_vectors(5, 3))


def test_near_and_twin_attention_of_a_text_model_against_a_per_query_loop():
    """`near` is judged by the text embeddings of a text model (not its W_E), `twin` by the given groups, both
    from the model's actual pattern, query by query."""
    import numpy as np

    from circuits.interp.sources import same_item_table

    model = model_with_sides("text", n_layers=1)
    with torch.no_grad():  # items 3 and 4 share a text direction (a near-duplicate pair); 4 and 9 a group
        model.E_text[4] = torch.nn.functional.normalize(model.E_text[3] + 0.05 * model.E_text[5], dim=0)
        model.W_in[1:] = 0.0  # W_E rank 1: every W_E row is (anti)parallel, so W_E cosines say nothing of the texts
    groups = np.full(11, -1)
    groups[[4, 9]] = 0
    h = np.array([[0, 3, 4, 4, 9, 3, 1, 4], [0, 0, 0, 9, 2, 4, 3, 3]])
    table = same_item_table(model, h, groups=groups).set_index(["head", "pattern"])
    E = torch.nn.functional.normalize(model.E_text, dim=-1)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.from_numpy(h))
    pattern = cache["blocks.0.attn.hook_pattern"]
    for head in (0, 1):
        near, twin, n, given, n_given = 0.0, 0.0, 0, 0.0, 0
        for b, row in enumerate(h):
            for q in range(len(row)):
                if row[q] == 0:
                    continue
                n += 1
                on_twin, has = 0.0, False
                for k in range(q + 1):
                    if row[k] == 0:
                        continue
                    w = float(pattern[b, head, q, k])
                    near += w * bool(float(E[row[k]] @ E[row[q]]) >= 0.9)
                    is_twin = groups[row[k]] == groups[row[q]] >= 0 and row[k] != row[q]
                    on_twin += w * is_twin
                    has = has or is_twin
                twin += on_twin
                given, n_given = given + on_twin * has, n_given + has
        assert table.loc[(f"L0H{head}", "actual"), "near"] == pytest.approx(near / n, abs=1e-6)
        assert table.loc[(f"L0H{head}", "actual"), "twin"] == pytest.approx(twin / n, abs=1e-6)
        assert table.loc[(f"L0H{head}", "actual"), "twin_given"] == pytest.approx(given / n_given, abs=1e-6)
        assert table.loc[(f"L0H{head}", "actual"), "twin_queries"] == n_given
        assert twin > 0 and near / n > table.loc[(f"L0H{head}", "actual"), "same"]


@pytest.mark.parametrize("side", ["text", "hybrid", "id"])
@pytest.mark.parametrize("n_negatives", [0, 4])
def test_unseen_items_take_no_part_in_training(side, n_negatives, monkeypatch):
    """Held-out documents do not exist when a model is trained: whatever their vectors, the loss is the same."""
    model = model_with_sides(side, n_layers=1)
    unseen = [8, 10]
    counts = torch.ones(11)
    counts[unseen] = 0
    model.set_unseen(counts)
    y = torch.tensor([[0, 0, 2, 7, 7, 1, 3, 9], [6, 1, 2, 3, 4, 5, 6, 2]])  # never an unseen target
    monkeypatch.setattr(torch, "multinomial", lambda *a, **k: torch.tensor([3, 8, 10, 5]))
    log_q = torch.full((11,), -2.3)
    before = next_item_loss(model, X, y, n_negatives, log_q)
    with torch.no_grad():
        if side == "id":
            model.W_U[:, unseen] = 50.0
        else:
            model.E_text[unseen] = 3.0 * model.E_text[1]  # a text that would dominate every softmax
    torch.testing.assert_close(next_item_loss(model, X, y, n_negatives, log_q), before)
