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
) -> Tensor:
    """Cross-entropy over real positions (target ≠ 0); logits only where there is a target.

    Full softmax when `n_negatives` is 0 and there are no in-batch negatives. Otherwise the candidates of every
    position are its target, the K shared sampled `negatives` (drawn here from `log_q` when not given: data-parallel
    ranks pass the same draw) and the shared `in_batch` items (distinct targets of the batch), each logit corrected
    by its log-Q (`log_q` for sampled ones, `in_batch_log_q` for in-batch ones; the target by the one of its kind:
    sampled if there are sampled negatives, else in-batch). A candidate equal to the target is left out.

    Reduction: the mean over positions, or the sum divided by `normalizer` (data-parallel ranks: each divides by
    the global batch's target count over the number of ranks, so averaged gradients equal one process's)."""
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
        logits = r @ model.W_U
        logits[:, 0] = float("-inf")
        if unseen is not None:
            logits = logits.masked_fill(unseen, float("-inf"))
        return reduce(F.cross_entropy(logits, y, reduction=reduction))
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
