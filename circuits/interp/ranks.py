"""Where the correct item ranks under each component, for every user of a split.

The seed observation ("the correct item ranked 161,838 under L1 alone, 1,231 under L0 alone and 661 under
L0+L1") becomes a distribution: one row per user × component with the target's logit and rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from circuits.data.sequences import EvalSplit, SequenceDataset
from circuits.interp.attribution import component_logits, residual_components, target_ranks, with_groups
from circuits.model import AttnOnlyTransformer, strip_left_padding
from circuits.scoring.metrics import mask_rows

MAX_LOGITS_PER_BLOCK = 2**24  # components × users × items held at once (64 MB in fp32)
MAX_USERS_PER_BLOCK = 256  # bounds the cached activations: users × n_ctx × heads × d_model


def rank_table(
    model: AttnOnlyTransformer, ds: SequenceDataset, split: EvalSplit, exclude_seen: bool = False
) -> pd.DataFrame:
    """Long format: user_id, component, target_logit, rank (1 = best among all items; ties pessimistic).

    `exclude_seen` removes the user's history items from the candidates (the target, if seen, ranks last).
    """
    one = residual_components(model, torch.from_numpy(split.history[:1]), times=torch.from_numpy(split.history_times[:1]))
    n_comp = len(with_groups(*one, model.cfg.n_layers)[1])
    block = max(1, min(MAX_USERS_PER_BLOCK, MAX_LOGITS_PER_BLOCK // (n_comp * ds.d_vocab)))
    frames = []
    for lo in range(0, len(split), block):
        rows = np.arange(lo, min(lo + block, len(split)))
        history, times = strip_left_padding(torch.from_numpy(split.history[rows]),
                                            torch.from_numpy(split.history_times[rows]))
        stack, labels = with_groups(*residual_components(model, history, times=times), model.cfg.n_layers)
        logits = component_logits(model, stack)  # [n_comp, batch, d_vocab]
        target = torch.from_numpy(split.target[rows])
        target_logit = logits.gather(-1, target.expand(len(labels), -1)[..., None])[..., 0]
        if exclude_seen:
            for c in range(len(labels)):
                mask_rows(logits[c], split.seen_ptr, split.seen_items, rows)
        ranks = target_ranks(logits, target)
        frames.append(pd.DataFrame({
            "user_id": np.tile(ds.user_ids[split.users[rows]], len(labels)),
            "component": np.repeat(labels, len(rows)),
            "target_logit": target_logit.reshape(-1).numpy(),
            "rank": ranks.reshape(-1).numpy(),
        }))
    table = pd.concat(frames, ignore_index=True)
    # component-major, users in split order, whatever the block size
    order = {c: i for i, c in enumerate(labels)}
    user_row = {u: i for i, u in enumerate(ds.user_ids[split.users])}
    keys = np.lexsort((table["user_id"].map(user_row).to_numpy(), table["component"].map(order).to_numpy()))
    return table.iloc[keys].reset_index(drop=True)


def rank_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per component: median and geometric-mean rank, share in the top 10; and per user how often the
    full first-layer sum (L0+L1) ranks the target better than L0 alone."""
    g = table.groupby("component", sort=False)["rank"]
    out = pd.DataFrame({
        "median_rank": g.median(),
        "geomean_rank": g.apply(lambda r: float(np.exp(np.log(r).mean()))),
        "top10_share": g.apply(lambda r: float((r <= 10).mean())),
    })
    wide = table.pivot(index="user_id", columns="component", values="rank")
    if {"L0", "L0+L1"} <= set(wide.columns):
        out.attrs["share_L0+L1_better_than_L0"] = float((wide["L0+L1"] < wide["L0"]).mean())
    return out
