"""The training step's hand-written gradients (the blocked full-softmax cross-entropy, the bucket scores' histogram)
against plain autograd of the obvious expressions."""

import pytest
import torch
import torch.nn.functional as F

import circuits.training.loss as loss_module
from circuits.config import ModelConfig
from circuits.model import bucket_scores, build_model
from circuits.training.loss import full_softmax_cross_entropy, next_item_loss
from tests.helpers import example_times, with_random_distance_weights


def _grads(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*tensors)
    value.backward()
    return value.detach(), [t.grad for t in tensors]


@pytest.mark.parametrize("block_floats", [1 << 21, 7 * 13, 13])  # one block; ragged blocks of 7 rows; one row
def test_blocked_full_softmax_equals_cross_entropy_of_the_masked_logits(block_floats, monkeypatch):
    monkeypatch.setattr(loss_module, "_BLOCK_FLOATS", block_floats)
    g = torch.Generator().manual_seed(0)
    r, W_U = torch.randn(45, 6, generator=g), torch.randn(6, 13, generator=g)
    excluded = torch.tensor([0, 4, 9])
    y = torch.tensor([i for i in range(1, 13) if i not in (4, 9)] * 5)[:45]

    def reference(r, W_U):
        logits = r @ W_U
        logits[:, excluded] = float("-inf")
        return F.cross_entropy(logits, y, reduction="sum")

    expected, expected_grads = _grads(reference, r, W_U)
    got, got_grads = _grads(lambda r, W_U: 2.5 * full_softmax_cross_entropy(r, W_U, y, excluded), r, W_U)
    torch.testing.assert_close(got, 2.5 * expected)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, 2.5 * b)
    assert (got_grads[1][:, excluded] == 0).all()  # excluded items are never pushed down


@pytest.mark.parametrize("normalizer", [None, 17.0])
def test_full_softmax_training_loss_and_gradients_equal_the_logits_cross_entropy(normalizer, monkeypatch):
    """The whole model: next_item_loss (full softmax) against F.cross_entropy of the model's own logits at the
    real positions, padding and unseen items masked, for the loss and every parameter's gradient."""
    monkeypatch.setattr(loss_module, "_BLOCK_FLOATS", 40)
    cfg = ModelConfig(d_vocab=11, n_ctx=8, n_layers=2, n_heads=2, d_model=8, d_head=4, dropout=0.0,
                      static_bias=True, time_buckets=6)
    model = with_random_distance_weights(build_model(cfg, seed=3), seed=4)
    counts = torch.ones(11)
    counts[[5, 10]] = 0
    model.set_unseen(counts)
    x = torch.tensor([[0, 0, 1, 2, 3, 4, 6, 7], [2, 3, 4, 6, 7, 8, 9, 1]])
    y = torch.tensor([[0, 0, 2, 3, 4, 6, 7, 1], [3, 4, 6, 7, 8, 9, 1, 2]])
    times = example_times(8, batch=2)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    got = next_item_loss(model, x, y, 0, times=times, normalizer=normalizer)
    got_grads = grads(got)
    logits = model(x, times)
    logits[..., 0] = float("-inf")
    logits[..., [5, 10]] = float("-inf")
    real = y != 0
    expected = F.cross_entropy(logits[real], y[real], reduction="mean" if normalizer is None else "sum")
    expected = expected if normalizer is None else expected / normalizer
    expected_grads = grads(expected)
    torch.testing.assert_close(got, expected)
    assert set(got_grads) == set(expected_grads) and "blocks.1.attn.W_time" in got_grads
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], msg=name)


def test_bucket_scores_equal_indexing_with_its_gradient():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(3, 6, generator=g)
    bucket = torch.randint(0, 6, (4, 12, 12), generator=g)  # [batch q k]
    assert set(bucket.unique().tolist()) == set(range(6))
    upstream = torch.randn(3, *bucket.shape, generator=g)
    expected, (expected_grad,) = _grads(lambda W: (W[:, bucket] * upstream).sum(), W)
    got, (got_grad,) = _grads(lambda W: (bucket_scores(W, bucket) * upstream).sum(), W)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)


def test_history_exclusion_masks_each_query_s_earlier_items_but_its_target(monkeypatch):
    """--loss-seen excluded against a per-position loop: the softmax of position t runs over the items not among
    inputs[:t+1] (the target always kept), for the loss and the gradients."""
    monkeypatch.setattr(loss_module, "_BLOCK_FLOATS", 30)
    model = build_model(ModelConfig(d_vocab=9, n_ctx=6, n_layers=1, n_heads=2, d_model=8, d_head=4, dropout=0.0,
                                    static_bias=False, time_buckets=0), seed=5)
    x = torch.tensor([[0, 1, 2, 3, 2, 4], [5, 6, 7, 8, 1, 3]])
    y = torch.tensor([[0, 2, 3, 2, 4, 5], [6, 7, 8, 1, 3, 6]])  # repeats: 2 at (0, 3), 6 at (1, 5)

    model.zero_grad()
    got = next_item_loss(model, x, y, 0, exclude_history=True)
    got.backward()
    got_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    logits = model(x)
    terms = []
    for b in range(2):
        for t in range(6):
            if y[b, t] == 0:
                continue
            keep = torch.ones(9, dtype=torch.bool)
            keep[0] = False
            keep[x[b, : t + 1]] = False
            keep[y[b, t]] = True
            row = logits[b, t].masked_fill(~keep, float("-inf"))
            terms.append(-torch.log_softmax(row, -1)[y[b, t]])
    expected = torch.stack(terms).mean()
    expected.backward()
    torch.testing.assert_close(got, expected)
    assert got < next_item_loss(model, x, y, 0)  # fewer competitors
    for n, p in model.named_parameters():
        torch.testing.assert_close(got_grads[n], p.grad, msg=n)
