"""Next-item loss: cross-entropy at every real position, over all items or over sampled negatives.

Items without training occurrences (`model.unseen`) are never candidates here, whatever the item sides.

Full softmax (`n_negatives=0`) scores the target against every item. Sampled softmax scores it against K
negatives shared by the batch (uniform or popularity-proportional), with the log-Q correction
`logit - log q(item)` on every candidate so the sampled loss estimates the full one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuits.config import SAMPLINGS
from circuits.data.sequences import SequenceDataset
from circuits.errors import UserError
from circuits.model import AttnOnlyTransformer


def next_item_loss(
    model: AttnOnlyTransformer,
    inputs: Int[Tensor, "batch pos"],
    targets: Int[Tensor, "batch pos"],
    n_negatives: int,
    log_q: Float[Tensor, " d_vocab"] | None = None,
    times: Float[Tensor, "batch pos"] | None = None,
    negatives: Int[Tensor, " k"] | None = None,
    in_batch: Int[Tensor, " m"] | None = None,
    in_batch_log_q: Float[Tensor, " d_vocab"] | None = None,
    normalizer: float | None = None,
    exclude_history: bool = False,
) -> Tensor:
    """Cross-entropy over real positions (target ≠ 0); logits only where there is a target.

    Full softmax when `n_negatives` is 0 and there are no in-batch negatives. Otherwise the candidates of every
    position are its target, the K shared sampled `negatives` (drawn here from `log_q` when not given: data-parallel
    ranks pass the same draw) and the shared `in_batch` items (distinct targets of the batch), each logit corrected
    by its log-Q (`log_q` for sampled ones, `in_batch_log_q` for in-batch ones; the target by the one of its kind:
    sampled if there are sampled negatives, else in-batch). A candidate equal to the target is left out.

    Reduction: the mean over positions, or the sum divided by `normalizer` (data-parallel ranks: each divides by
    the global batch's target count over the number of ranks, so averaged gradients equal one process's).

    `exclude_history` (full softmax only): the items of `inputs` up to each position, other than its target, are
    left out of that position's softmax (`--loss-seen excluded`)."""
    resid = model.residual(inputs, times)
    mask = targets != 0
    r, y = resid[mask], targets[mask]  # [N, d_model], [N]
    # items never seen in training (a catalogue pool, held-out documents) take no part in training, on any
    # side: new documents do not exist yet when a model is trained, so none may be pushed down as a negative
    unseen = model.unseen if model.unseen.any() else None
    reduction = "mean" if normalizer is None else "sum"

    def reduce(loss: Tensor) -> Tensor:
        return loss if normalizer is None else loss / normalizer

    if n_negatives == 0 and in_batch is None:
        excluded = torch.zeros(1, dtype=torch.long, device=r.device)  # padding
        if unseen is not None:
            excluded = torch.cat([excluded, unseen.nonzero().flatten()])
        history = _history_items(inputs, mask, y) if exclude_history else None
        loss = full_softmax_cross_entropy(r, model.W_U, y, excluded, history)
        return reduce(loss / len(y) if normalizer is None else loss)
    if exclude_history:
        raise UserError("--loss-seen excluded needs a full softmax (--negatives 0, no --in-batch-negatives)")
    parts = []  # (candidates, their log-Q)
    if n_negatives:
        assert log_q is not None
        if negatives is None:
            negatives = torch.multinomial(log_q.exp(), n_negatives, replacement=True)  # [K], shared by the batch
        parts.append((negatives, log_q))
    if in_batch is not None:
        assert in_batch_log_q is not None
        parts.append((in_batch, in_batch_log_q))
    target_log_q = parts[0][1]
    # only the columns needed: a text model's W_U over a large pool is never formed here
    pos_logit = (r * model.unembed_columns(y).T).sum(-1, keepdim=True) - target_log_q[y][:, None]
    logits = [pos_logit]
    for neg, lq in parts:
        neg_logit = r @ model.unembed_columns(neg) - lq[neg][None, :]
        neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], float("-inf"))  # a negative equal to the target
        if unseen is not None:
            neg_logit = neg_logit.masked_fill(unseen[neg][None, :], float("-inf"))
        logits.append(neg_logit)
    logits = torch.cat(logits, dim=1)
    return reduce(F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=logits.device),
                                  reduction=reduction))


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `r @ W_U` over every item but the excluded columns, in blocks of rows.

    The reference (`F.cross_entropy` of the masked logits) writes the N × d_vocab logits, their log-softmax, and in
    backward a zero-filled gradient, the log-softmax gradient and the masking's copy: five fresh N × d_vocab
    buffers per step, the bulk of a full-softmax step on a CPU (first touches of new memory). Here forward keeps
    only each row's log-sum-exp; backward recomputes each block's logits (one more small product) and turns them
    in place into `softmax − onehot`, so only one block of rows (`_BLOCK_FLOATS` floats) is ever held. Backward
    may run once (`once_differentiable`)."""

    @staticmethod
    def forward(ctx, r: Tensor, W_U: Tensor, y: Tensor, excluded: Tensor, history: Tensor | None) -> Tensor:
        lse, target = r.new_empty(len(y)), r.new_empty(len(y))
        for rows in _row_blocks(len(y), W_U.shape[1]):
            logits = _masked_logits(r[rows], W_U, excluded, history, rows)
            lse[rows] = torch.logsumexp(logits, dim=1)
            target[rows] = logits.gather(1, y[rows, None])[:, 0]
        ctx.history = history
        ctx.save_for_backward(r, W_U, y, excluded, lse)
        return (lse - target).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        r, W_U, y, excluded, lse = ctx.saved_tensors
        grad_r, grad_W = torch.empty_like(r), torch.zeros_like(W_U)
        for rows in _row_blocks(len(y), W_U.shape[1]):
            # softmax (excluded items: 0), then minus the one-hot target
            g = _masked_logits(r[rows], W_U, excluded, ctx.history, rows).sub_(lse[rows, None]).exp_()
            g[torch.arange(len(g), device=g.device), y[rows]] -= 1.0
            torch.mm(g, W_U.T, out=grad_r[rows])
            grad_W.addmm_(r[rows].T, g)
        return grad_r.mul_(grad), grad_W.mul_(grad), None, None, None


_BLOCK_FLOATS = 1 << 21  # logits held at once in the full-softmax loss: 8 MB of float32


def _row_blocks(n: int, d_vocab: int):
    step = max(1, _BLOCK_FLOATS // max(d_vocab, 1))
    return (slice(s, min(s + step, n)) for s in range(0, n, step))


def _masked_logits(r: Tensor, W_U: Tensor, excluded: Tensor, history: Tensor | None, rows: slice) -> Tensor:
    logits = (r @ W_U).index_fill_(1, excluded, float("-inf"))
    return logits if history is None else logits.scatter_(1, history[rows], float("-inf"))


def _history_items(inputs: Int[Tensor, "batch pos"], mask: Tensor, y: Int[Tensor, " n"]) -> Int[Tensor, "n pos"]:
    """For every target position (row-major, as `mask` selects them): the input items up to it, 0 (padding,
    excluded anyway) after it and where an item equals the target."""
    n = inputs.shape[1]
    later = torch.ones(n, n, dtype=torch.bool, device=inputs.device).triu(1)  # [q, k]: k after q
    rows = inputs[:, None, :].expand(-1, n, -1).masked_fill(later, 0)[mask]  # [N, pos]
    return rows.masked_fill(rows == y[:, None], 0)


def full_softmax_cross_entropy(
    r: Float[Tensor, "n d_model"], W_U: Float[Tensor, "d_model d_vocab"], y: Int[Tensor, " n"],
    excluded: Int[Tensor, " k"], history: Int[Tensor, "n h"] | None = None,
) -> Tensor:
    """Σ over rows of −log softmax(r @ W_U)[y], the `excluded` item columns at −inf: the full-softmax training
    loss, summed (equal to `F.cross_entropy(masked logits, y, reduction="sum")`, gradients included). `history`:
    items also left out, per row (0 = none)."""
    return _FullSoftmaxCrossEntropy.apply(r, W_U, y, excluded, history)


def negative_log_q(ds: SequenceDataset, sampling: str) -> Float[Tensor, " d_vocab"]:
    """log of the negative-sampling distribution over items (padding: probability 0)."""
    if sampling == "uniform":
        q = torch.ones(ds.d_vocab, dtype=torch.float64)
    elif sampling == "popularity":
        q = torch.from_numpy(ds.train_counts()).double() + 1.0
    else:
        raise UserError(f"unknown negative sampling {sampling!r} ({', '.join(SAMPLINGS)})")
    q[0] = 0.0
    return (q / q.sum()).log().float()
