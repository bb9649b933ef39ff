"""`run_with_cache` returns TransformerLens's ActivationCache; its decompositions against the project's own
(`circuits.interp.attribution`), and their sums against the model's forward pass."""

import pytest
import torch
import transformer_lens
from transformer_lens.HookedRootModule import HookedRootModule

from circuits.config import ModelConfig
from circuits.interp.attribution import component_logits, residual_components
from circuits.model import build_model
from tests.helpers import ATTENTION_VARIANTS, example_times, model_with_sides, with_random_distance_weights

X = torch.tensor([[0, 0, 4, 2, 7, 7, 1, 3], [5, 6, 1, 2, 3, 4, 5, 6]])  # the first row left-padded
T = example_times(8, batch=2)
ITEMS, OTHER = torch.tensor([3, 9]), torch.tensor([1, 4])  # one item per sequence, and one to compare it with
BATCH = torch.arange(2)

# (n_layers, positional, attention): every depth, without positions, static attention over time gaps, and
# learned attention with a static bias over distance and time
CASES = {
    "L0": (0, True, "learned"),
    "L0-no-pos": (0, False, "learned"),
    "L1": (1, True, "learned"),
    "L2": (2, True, "learned"),
    "L2-no-pos-static": (2, False, "static"),
    "L1-static-time": (1, True, "time"),
    "L2-learned+time-bias": (2, True, "learned+distance+time"),
}


def model_with(n_layers, positional, attention, side="id"):
    """A tiny eval-mode model; `side` other than id: items enter or leave by text (tests.helpers.model_with_sides)."""
    if side != "id":
        model = model_with_sides(side, n_layers, positional=positional, **ATTENTION_VARIANTS[attention])
        return with_random_distance_weights(model, seed=1)
    cfg = ModelConfig(d_vocab=11, n_ctx=8, n_layers=n_layers, n_heads=2, d_model=12, d_head=4, positional=positional,
                      **ATTENTION_VARIANTS[attention])
    return with_random_distance_weights(build_model(cfg, seed=n_layers).eval(), seed=1)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_decompose_resid_and_head_results_are_the_projects_components(case):
    model = model_with(*CASES[case])
    _, cache = model.run_with_cache(X, times=T)
    stack, labels = residual_components(model, X, times=T)
    part = dict(zip(labels, stack))
    head_labels = [label for label in labels if label.startswith("L")]
    final = model.residual(X, T)[:, -1]

    heads, got_labels = cache.stack_head_results(pos_slice=-1, return_labels=True)
    assert got_labels == head_labels and heads.shape == (len(head_labels), 2, 12)
    for head, label in zip(heads, head_labels):
        close(head, part[label])

    resid, resid_labels = cache.decompose_resid(pos_slice=-1, return_labels=True)
    positional = model.W_pos is not None
    n_layers = model.cfg.n_layers
    assert resid_labels == ["embed", *["pos_embed"] * positional, *[f"{l}_attn_out" for l in range(n_layers)]]
    expected = [part[label] for label in ("embed", "pos") if label in part]
    expected += [sum(part[f"L{l}H{h}"] for h in range(model.cfg.n_heads)) for l in range(n_layers)]
    close(resid, torch.stack(expected))
    close(resid.sum(0), final)
    close(heads.sum(0) + part["embed"] + part.get("pos", 0), final)

    full, full_labels = cache.get_full_resid_decomposition(pos_slice=-1, return_labels=True)
    assert full_labels == [*head_labels, "embed", *["pos_embed"] * positional, "bias"]
    close(full[:-1], torch.stack([part[label] for label in [*head_labels, "embed", *["pos"] * positional]]))
    assert not full[-1].any()  # a bias-free model
    close(full.sum(0), final)


# text-out and hybrid: an item's direction comes from the text unembedding (its columns only, `unembed_columns`)
@pytest.mark.parametrize("side", ["id", "text-out", "hybrid"])
@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_logit_attrs_are_the_projects_component_logits(case, side):
    model = model_with(*CASES[case], side=side)
    _, cache = model.run_with_cache(X, times=T)
    stack, _ = residual_components(model, X, times=T)
    per_item = component_logits(model, stack)  # [components, batch, d_vocab]
    logits = model(X, T)

    attrs = cache.logit_attrs(stack, tokens=ITEMS)
    close(attrs, per_item[:, BATCH, ITEMS])
    close(attrs.sum(0), logits[BATCH, -1, ITEMS])
    diff = cache.logit_attrs(stack, tokens=ITEMS, incorrect_tokens=OTHER)
    close(diff, per_item[:, BATCH, ITEMS] - per_item[:, BATCH, OTHER])
    close(cache.logit_attrs(stack, tokens=7), per_item[:, :, 7])  # one item for every sequence

    # the cache's own stack, at every position, with an item per sequence and position
    every = cache.decompose_resid()  # [components, batch, pos, d_model]
    items = (X + 1) % model.cfg.d_vocab
    close(cache.logit_attrs(every, tokens=items).sum(0), logits.gather(-1, items[..., None])[..., 0])


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_shorthand_keys_and_accumulated_resid(case):
    model = model_with(*CASES[case])
    captured = {}

    def keep(tensor, hook):
        captured[hook.name] = tensor.clone()

    names = ["hook_embed"] + [f"blocks.{l}.{name}" for l in range(model.cfg.n_layers)
                              for name in ("attn.hook_pattern", "hook_resid_pre", "attn.hook_z")]
    model.run_with_hooks(X, times=T, fwd_hooks=[(name, keep) for name in names])
    _, cache = model.run_with_cache(X, times=T)

    close(cache["hook_embed"], captured["hook_embed"])
    assert cache["embed"] is cache["hook_embed"]
    for l in range(model.cfg.n_layers):
        close(cache["pattern", l], captured[f"blocks.{l}.attn.hook_pattern"])
        assert cache["pattern", l] is cache[f"blocks.{l}.attn.hook_pattern"]
        close(cache["resid_pre", l], captured[f"blocks.{l}.hook_resid_pre"])
        close(cache["z", l, "attn"], captured[f"blocks.{l}.attn.hook_z"])
    if model.cfg.n_layers:
        assert cache["pattern", -1] is cache[f"blocks.{model.cfg.n_layers - 1}.attn.hook_pattern"]

    final = model.residual(X, T)
    accumulated, labels = cache.accumulated_resid(return_labels=True)
    assert labels == [*[f"{l}_pre" for l in range(model.cfg.n_layers)], "final_post"]
    close(accumulated[-1], final)
    close(cache["resid_post", -1], final)  # a 0-layer model too (no hook holds its final residual)
    close(accumulated[-1] @ model.W_U, model(X, T))  # the logit lens needs no LayerNorm
    # no LayerNorm: apply_ln is the identity
    close(cache.accumulated_resid(apply_ln=True), accumulated)
    stack = cache.decompose_resid(pos_slice=-1)
    assert torch.equal(cache.apply_ln_to_stack(stack), stack)
    close(cache.decompose_resid(pos_slice=-1, apply_ln=True), stack)
    close(cache.stack_head_results(pos_slice=-1, apply_ln=True), cache.stack_head_results(pos_slice=-1))


def test_is_an_activation_cache_holding_the_hooks_tensors(monkeypatch):
    model = model_with(2, True, "learned+time")
    dicts = []
    plain = HookedRootModule.run_with_cache

    def recorded(self, *args, **kwargs):
        out, cache_dict = plain(self, *args, **kwargs)
        dicts.append(cache_dict)
        return out, cache_dict

    monkeypatch.setattr(HookedRootModule, "run_with_cache", recorded)
    with torch.no_grad():
        out, cache = model.run_with_cache(X, times=T, return_type=None)
    assert isinstance(cache, transformer_lens.ActivationCache)
    assert out is None
    assert cache.cache_dict is dicts[0]  # the hooks' dict itself: nothing copied

    wanted = ["hook_embed", "blocks.1.attn.hook_pattern"]
    with torch.no_grad():
        logits, filtered = model.run_with_cache(X, times=T, names_filter=lambda name: name in wanted)
    assert list(filtered.keys()) == wanted and logits.shape == (2, 8, 11)
    assert filtered["pattern", 1] is filtered["blocks.1.attn.hook_pattern"]


@torch.no_grad()
def test_batch_slices_and_single_sequences_keep_the_conveniences():
    for n_layers in (0, 2):
        model = model_with(n_layers, True, "learned")
        _, cache = model.run_with_cache(X)
        second = cache.apply_slice_to_batch_dim(1)
        assert isinstance(second, type(cache)) and not second.has_batch_dim
        close(second.accumulated_resid()[-1], model.residual(X)[1])
        _, single = model.run_with_cache(X[1:], remove_batch_dim=True)
        assert not single.has_batch_dim
        close(single.decompose_resid(pos_slice=-1).sum(0), model.residual(X)[1, -1])
        close(single.logit_attrs(single.decompose_resid(pos_slice=-1), tokens=3, has_batch_dim=False).sum(0),
              model(X)[1, -1, 3])


def test_items_are_indices_not_text():
    model = model_with(1, True, "learned")
    with torch.no_grad():
        _, cache = model.run_with_cache(X)
    with pytest.raises(TypeError, match="no tokenizer"):
        cache.logit_attrs(cache.decompose_resid(pos_slice=-1), tokens="Heat (1995)")


def test_a_zero_layer_cache_from_training_mode_refuses_its_final_residual():
    model = model_with(0, True, "learned").train()  # dropout on the embeddings, which no hook records
    _, cache = model.run_with_cache(X)
    with pytest.raises(ValueError, match="eval mode"):
        cache.accumulated_resid()
