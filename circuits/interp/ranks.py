"""Where the correct item ranks under each component, for every user of a split.

The seed observation ("the correct item ranked 161,838 under L1 alone, 1,231 under L0 alone and 661 under
L0+L1") becomes a distribution: one row per user × component with the target's logit and rank.

Users are taken in blocks of similar history length (`last_position.length_batches`: little padding; the last
layer at the last query only, `last_position_pass`) whose logits [n_comp, block, d_vocab] fit
MAX_LOGITS_PER_BLOCK, so memory is bounded by the vocabulary, not the number of users: `iter_rank_blocks` yields
one block's rows at a time, `rank_arrays` keeps only a logit and a rank per user × component (12 bytes: 130 MB
for a million users × 11 components) and `rank_table` is the long table of everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from circuits.data.sequences import EvalSplit, SequenceDataset
from circuits.interp.attribution import with_groups
from circuits.interp.last_position import iter_last_positions, last_position_pass, read_split
from circuits.model import AttnOnlyTransformer
from circuits.scoring.metrics import seen_index

MAX_LOGITS_PER_BLOCK = 2**27  # components × users × items held at once (512 MB in fp32): 12 users at 1M items
MAX_USERS_PER_BLOCK = 256  # bounds the cached activations: users × n_ctx × heads × d_model


@dataclass
class RankArrays:
    """The rank table in wide form: `target_logit` (float32) and `rank` (int64), [n_components, n_users], for
    the users `user_ids` in split order. Row i of the long table (`frame`) is component i // n_users, user
    i % n_users."""

    labels: list[str]
    user_ids: np.ndarray
    target_logit: np.ndarray
    rank: np.ndarray

    def __len__(self) -> int:
        return self.rank.size

    def frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """Rows lo:hi of the long table: user_id, component, target_logit, rank (component-major)."""
        n = len(self.user_ids)
        row = np.arange(lo, len(self) if hi is None else min(hi, len(self)))
        c, u = row // max(n, 1), row % max(n, 1)
        return pd.DataFrame({
            "user_id": self.user_ids[u],
            "component": np.asarray(self.labels)[c],
            "target_logit": self.target_logit[c, u],
            "rank": self.rank[c, u],
        })

    def summary(self) -> pd.DataFrame:
        """`rank_summary` of the long table, from the wide arrays (the same numbers, without the table)."""
        rows = {}
        for label, r in zip(self.labels, self.rank):
            r = pd.Series(r)
            rows[label] = {"median_rank": float(r.median()), "geomean_rank": float(np.exp(np.log(r).mean())),
                           "top10_share": float((r <= 10).mean())}
        out = pd.DataFrame.from_dict(rows, orient="index", columns=["median_rank", "geomean_rank", "top10_share"])
        out.index.name = "component"
        if {"L0", "L0+L1"} <= set(self.labels):
            a, b = self.rank[self.labels.index("L0+L1")], self.rank[self.labels.index("L0")]
            out.attrs["share_L0+L1_better_than_L0"] = float((a < b).mean())
        return out


@contextmanager
def residual_only(model: AttnOnlyTransformer):
    """Inside, the model's forward passes stop at the final residual stream (`model.residual`): for analyses that
    read only cached activations (`run_with_cache(...)[1]`), whose forward pass would otherwise unembed every
    position, batch × n_ctx × d_vocab logits. At a million items that is most of the work (5× the components'
    own logits for a user of 50 positions) and, for a batch of 256 histories, 51 GB."""
    model.forward = lambda items, times=None, return_type=None: model.residual(items, times)
    try:
        yield
    finally:
        del model.forward


def component_labels(model: AttnOnlyTransformer) -> list[str]:
    """The components of the rank table, in order: embed, pos, each head, then the groups (`with_groups`)."""
    one = torch.ones(1, 1, dtype=torch.long)
    lp = last_position_pass(model, one, torch.zeros(1, 1, dtype=torch.float64))
    return with_groups(*lp.components(), model.cfg.n_layers)[1]


def users_per_block(n_comp: int, d_vocab: int) -> int:
    return max(1, min(MAX_USERS_PER_BLOCK, MAX_LOGITS_PER_BLOCK // (n_comp * d_vocab)))


class ComponentRanks:
    """A reader of `last_position.read_split`: every user's target logit and rank under every component
    (`arrays()`, a `RankArrays`); each batch's rows through `block(rows, lp)` too (`iter_rank_blocks`)."""

    def __init__(self, model: AttnOnlyTransformer, ds: SequenceDataset, split: EvalSplit, exclude_seen: bool = False,
                 progress: bool = False):
        self.model, self.ds, self.split, self.exclude_seen = model, ds, split, exclude_seen
        self.labels = component_labels(model)
        self.max_rows = users_per_block(len(self.labels), ds.d_vocab)
        self.target_logit = np.empty((len(self.labels), len(split)), dtype=np.float32)
        self.rank = np.empty((len(self.labels), len(split)), dtype=np.int64)
        self._buffer = None  # logits of a block, reused: no page faults per block
        self._bar = tqdm(total=len(split), desc="ranks", unit="user", disable=None if progress else True, leave=False)

    def block(self, rows: np.ndarray, lp) -> tuple[np.ndarray, np.ndarray]:
        """(target_logit [n_comp, rows], rank [n_comp, rows]) of one batch."""
        model, ds, split = self.model, self.ds, self.split
        stack, labels = with_groups(*lp.components(), model.cfg.n_layers)
        if self._buffer is None:
            self._buffer = torch.empty(len(labels) * min(self.max_rows, len(split)), ds.d_vocab)
        # component_logits: stack @ W_U [n_comp, batch, d_vocab], unscorable items masked in place
        logits = torch.matmul(stack.reshape(-1, stack.shape[-1]), model.W_U.detach(),
                              out=self._buffer[: stack.shape[0] * len(rows)])
        logits = logits.view(len(labels), len(rows), ds.d_vocab)
        if model.unscorable is not None:
            logits.masked_fill_(model.unscorable, float("-inf"))
        target = split.target[rows]
        target_logit = logits[:, np.arange(len(rows)), target].numpy()  # a copy (advanced indexing)
        if self.exclude_seen:  # the same seen items in every component
            r, c = seen_index(split.seen_ptr, split.seen_items, rows)
            logits[:, r, c] = float("-inf")
        ranks = np.empty((len(labels), len(rows)), dtype=np.int64)
        for c in range(len(labels)):
            ranks[c] = _target_ranks(logits[c].numpy(), target)
        return target_logit, ranks

    def read(self, rows: np.ndarray, lp) -> None:
        self.target_logit[:, rows], self.rank[:, rows] = self.block(rows, lp)
        self._bar.update(len(rows))

    def arrays(self) -> RankArrays:
        self._bar.close()
        return RankArrays(self.labels, self.ds.user_ids[self.split.users], self.target_logit, self.rank)


def _target_ranks(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`target_ranks` of one component's logits [batch, d_vocab]: the items (padding excluded) scoring ≥ the
    target, itself included (1 = best; ties pessimistic). numpy's count of a comparison is ~30× faster than
    torch's sum of a bool tensor, which was most of the time at a million items."""
    t = logits[np.arange(len(target)), target]
    if logits.shape[1] <= 2**16:
        return np.count_nonzero(logits[:, 1:] >= t[:, None], axis=1)
    return np.array([np.count_nonzero(row[1:] >= v) for row, v in zip(logits, t)], dtype=np.int64)


def iter_rank_blocks(
    model: AttnOnlyTransformer, ds: SequenceDataset, split: EvalSplit, exclude_seen: bool = False
) -> Iterator[pd.DataFrame]:
    """The rank table one block of users at a time (each frame: its users in split order, component-major; the
    blocks by history length, `length_batches`); `rank_table` is these frames put in its order."""
    reader = ComponentRanks(model, ds, split, exclude_seen)
    for rows, lp in iter_last_positions(model, split.history, split.history_times, reader.max_rows):
        target_logit, rank = reader.block(rows, lp)
        yield RankArrays(reader.labels, ds.user_ids[split.users[rows]], target_logit, rank).frame()


def rank_arrays(
    model: AttnOnlyTransformer, ds: SequenceDataset, split: EvalSplit, exclude_seen: bool = False,
    progress: bool = False,
) -> RankArrays:
    """Every user's target logit and rank under every component, without the long table (`progress`: a bar on a
    terminal)."""
    reader = ComponentRanks(model, ds, split, exclude_seen, progress)
    read_split(model, split, [reader])
    return reader.arrays()


def rank_table(
    model: AttnOnlyTransformer, ds: SequenceDataset, split: EvalSplit, exclude_seen: bool = False
) -> pd.DataFrame:
    """Long format: user_id, component, target_logit, rank (1 = best among all items; ties pessimistic);
    component-major, users in split order.

    `exclude_seen` removes the user's history items from the candidates (the target, if seen, ranks last).
    """
    return rank_arrays(model, ds, split, exclude_seen).frame()


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
