"""Retrieval evaluation with faiss: the model's next-item ranking as maximum inner product search.

The logits are `r_L @ W_U` (row-vector convention), so ranking the items for a user is ranking the item
vectors `W_U.T[1:]` (row 0 of `W_U.T` is padding and is never indexed) by inner product with the user vector
`r_L` at the last position. An exact index (`IndexFlatIP`) reproduces `metrics.split_ranks`' full-ranking
ranks up to k; approximate ones (HNSW, IVF-PQ) trade recall for speed, and `retrieval_table` puts them side
by side with the metrics, the recall of their top 10 against the exact top 10, build time and queries per
second.

Rank conventions (as in `metrics`): ranks are 1-based, ties are broken **pessimistically** among the items
the index returned (rank = returned candidates scoring ≥ the target under the index's own scores, so the
order faiss gives tied items in does not matter), and a target not within the top k is reported as k + 1,
a miss at every cutoff ≤ k. Policy `full/excluded` drops the items of the user's full history before the
target (`split.seen_ptr/seen_items`); a target among them is a miss. With an exact index and k = 20 every
metric of `metrics.KS` equals the torch evaluator's (up to the float32 rounding of near-ties: faiss computes
the inner products with its own BLAS).

faiss is imported inside the functions that need it, so importing this module costs nothing without it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from circuits.data.sequences import EvalSplit
from circuits.errors import UserError
from circuits.model import AttnOnlyTransformer, strip_left_padding
from circuits.scoring.metrics import metrics_from_ranks

INDEX_KINDS = ("exact", "hnsw", "ivfpq")
# every parameter each kind takes, with its default (None: chosen from the pool's size and width)
INDEX_DEFAULTS: dict[str, dict[str, Any]] = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 64},
    "ivfpq": {"nlist": None, "m": None, "nbits": 8, "nprobe": 16, "seed": 0},
}
MIN_POINTS_PER_CENTROID = 39  # faiss's k-means warns below this many training points per centroid
RESULTS_PER_SEARCH = 1 << 22  # users × depth per faiss call in `retrieval_ranks` (about 50 MB of results)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("faiss is not installed: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


# --- vectors ----------------------------------------------------------------------------------------
@torch.no_grad()
def user_vectors(model: AttnOnlyTransformer, split: EvalSplit, batch_size: int = 512) -> Float[np.ndarray, "n_users d_model"]:
    """r_L at the last position for every row of `split`: float32 [n_users, d_model], so that the model's
    logits are `user_vectors @ W_U`. Computed as `evaluator.model_scorer` does (left padding stripped, the
    rows' `history_times` for a time-gap model), in eval mode (the model's mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for lo in range(0, len(split), batch_size):
            rows = np.arange(lo, min(lo + batch_size, len(split)))
            history = torch.from_numpy(split.history[rows]).to(device)
            if model.cfg.uses_time:
                times = torch.from_numpy(split.history_times[rows]).to(device)
                items, times = strip_left_padding(history, times)
                resid = model.residual(items, times)
            else:
                resid = model.residual(strip_left_padding(history))
            out.append(resid[:, -1].float().cpu().numpy())
    finally:
        model.train(was_training)
    d_model = model.cfg.d_model
    return np.ascontiguousarray(np.concatenate(out) if out else np.zeros((0, d_model)), dtype=np.float32)


@torch.no_grad()
def item_vectors(model: AttnOnlyTransformer) -> Float[np.ndarray, "d_vocab d_model"]:
    """`model.W_U.T` as float32 [d_vocab, d_model]: row i is item i's vector, row 0 padding (never indexed).
    Read through `model.W_U`, so an unembedding that is a product of factors works alike."""
    return np.ascontiguousarray(model.W_U.detach().T.float().cpu().numpy())


# --- indexes ----------------------------------------------------------------------------------------
@dataclass
class ItemIndex:
    """A faiss inner-product index over items 1..d_vocab-1 (or the `keep` ones), stored under their vocabulary
    ids.

    `params` are the parameters actually used (after `build_index`'s clamping), `build_s` the seconds that
    adding (and for IVF-PQ training) took. HNSW's `params["ef_search"]` is read at every search, so a sweep
    can set it without rebuilding (IVF-PQ's nprobe lives on the faiss index: `index.index.nprobe`)."""

    index: Any  # faiss.Index
    kind: str
    params: dict = field(default_factory=dict)
    build_s: float = 0.0

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    def search(
        self, queries: Float[np.ndarray, "n_queries d_model"], k: int
    ) -> tuple[Float[np.ndarray, "n_queries k"], Int[np.ndarray, "n_queries k"]]:
        """The top k items per query by inner product, best first: (scores, vocabulary ids); id −1 (score
        −inf) where the index found fewer than k. For HNSW, efSearch is raised to k when k exceeds it (faiss
        1.15 does not: it returns only about efSearch results and pads the rest with −1)."""
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "hnsw":
            params = _faiss().SearchParametersHNSW()
            params.efSearch = max(self.params["ef_search"], k)
            scores, positions = self.index.search(queries, k, params=params)
        else:
            scores, positions = self.index.search(queries, k)
        found = positions >= 0  # the index holds vocabulary ids (add_with_ids): no offset to undo
        return np.where(found, scores, -np.inf).astype(np.float32), np.where(found, positions, -1)


def _largest_divisor_at_most(d: int, m: int) -> int:
    return max(q for q in range(1, min(m, d) + 1) if d % q == 0)


def _ivfpq_params(n: int, d: int, nlist: int | None, m: int | None, nbits: int, nprobe: int, seed: int) -> dict:
    """IVF-PQ parameters that the pool can train: nlist ≤ n / 39 (default ≈ 4 √n), 2^nbits ≤ n / 39, m a divisor
    of d (default the largest ≤ d / 8: sub-vectors of 8 dimensions, d / 8 bytes per item at 8 bits; 4-dimension
    sub-vectors train over ten times slower in faiss 1.15 for little gain)."""
    nlist = round(4 * math.sqrt(n)) if nlist is None else nlist
    nlist = max(1, min(nlist, n // MIN_POINTS_PER_CENTROID))
    nbits = max(1, min(nbits, int(math.log2(max(n // MIN_POINTS_PER_CENTROID, 1)))))
    m = _largest_divisor_at_most(d, max(1, d // 8) if m is None else m)
    return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": max(1, min(nprobe, nlist)), "seed": seed}


def build_index(
    vectors: Float[np.ndarray, "d_vocab d_model"], kind: str = "exact", keep: np.ndarray | None = None, **params
) -> ItemIndex:
    """A faiss inner-product index over `vectors[1:]` (row 0, padding, is left out; search returns vocabulary
    ids, so 0 is never returned); `keep` (bool [d_vocab]): only those items are indexed (e.g. an id model has
    no trained vector for items never seen in training; see `model.unscorable`).

    kind `exact`: IndexFlatIP. `hnsw`: IndexHNSWFlat with METRIC_INNER_PRODUCT (M, ef_construction,
    ef_search). `ivfpq`: IndexIVFPQ over an IndexFlatIP coarse quantizer (nlist lists, m sub-quantizers of
    nbits bits, nprobe lists searched), trained on the vectors themselves with k-means seeded by `seed`;
    nlist, nbits and m are clamped to what the pool can train (see `_ivfpq_params`)."""
    faiss = _faiss()
    if kind not in INDEX_KINDS:
        raise UserError(f"unknown index kind {kind!r} (one of {', '.join(INDEX_KINDS)})")
    unknown = set(params) - set(INDEX_DEFAULTS[kind])
    if unknown:
        raise UserError(f"unknown {kind} parameter(s) {', '.join(sorted(unknown))} "
                        f"(takes {', '.join(INDEX_DEFAULTS[kind]) or 'none'})")
    params = {**INDEX_DEFAULTS[kind], **params}
    ids = np.arange(1, len(vectors), dtype=np.int64)
    if keep is not None:
        ids = ids[np.asarray(keep, dtype=bool)[1:]]
    # a row slice of a C-contiguous array is contiguous: no copy of the pool (unless `keep` selects rows)
    items = np.ascontiguousarray(vectors[1:] if keep is None else vectors[ids], dtype=np.float32)
    n, d = items.shape
    if n < 1:
        raise UserError("no items to index (vectors holds only the padding row)")
    t0 = time.perf_counter()
    if kind == "exact":
        index = faiss.IndexIDMap(faiss.IndexFlatIP(d))
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, params["M"], faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = params["ef_construction"]
        hnsw.hnsw.efSearch = params["ef_search"]
        index = faiss.IndexIDMap(hnsw)
    else:
        params = _ivfpq_params(n, d, **params)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, params["nlist"], params["m"], params["nbits"],
                                 faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = index.pq.cp.seed = params["seed"]
        if n < MIN_POINTS_PER_CENTROID * 2:  # a toy pool: even 2 centroids per sub-quantizer is under-trained
            index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
        index.nprobe = params["nprobe"]
        index.train(items)  # (faiss's Python wrapper keeps `quantizer` alive with `index`)
    index.add_with_ids(items, ids)  # IVF-PQ stores ids itself; the others through IndexIDMap
    return ItemIndex(index, kind, params, time.perf_counter() - t0)


# --- ranks ------------------------------------------------------------------------------------------
def _seen_mask(items: np.ndarray, rows: np.ndarray, ptr: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """[len(rows), depth] bool: items[i, j] is among row rows[i]'s seen items (CSR ptr/seen)."""
    lens = ptr[rows + 1] - ptr[rows]
    owner = np.repeat(np.arange(len(rows)), lens)
    # position of each seen entry in `seen`: its row's start plus its offset within the row
    flat = ptr[rows][owner] + np.arange(len(owner)) - np.repeat(np.cumsum(lens) - lens, lens)
    # (row, item) pairs as one int64 key each; ids are < 2^32, and −1 ("not found") is invalid anyway
    seen_keys = owner * (1 << 32) + seen[flat]
    keys = np.arange(len(rows))[:, None] * (1 << 32) + items
    return np.isin(keys, seen_keys)


def _ranks_from_results(scores: np.ndarray, items: np.ndarray, target: np.ndarray, drop: np.ndarray,
                        k: int) -> np.ndarray:
    """Pessimistic rank of each target among the returned, not dropped, items; k + 1 if not returned or > k."""
    valid = (items >= 0) & ~drop
    is_target = valid & (items == target[:, None])
    found = is_target.any(1)
    t_score = scores[np.arange(len(items)), is_target.argmax(1)]
    rank = (valid & (scores >= t_score[:, None])).sum(1)
    return np.where(found & (rank <= k), rank, k + 1).astype(np.int64)


def retrieval_ranks(
    index: ItemIndex, queries: Float[np.ndarray, "n_users d_model"], split: EvalSplit, k: int = 20
) -> dict[str, Int[np.ndarray, " n_users"]]:
    """Per-user target ranks from the index: {"full/included", "full/excluded"}, int64 [n_users], 1-based,
    pessimistic among tied returned items, ranks > k reported as k + 1 (a miss at every cutoff ≤ k).

    Each search goes one deeper than needed (k + 1 candidates left after the policy's removals): if the
    target's pessimistic rank is ≤ k, a returned candidate scores strictly below it, so no item outside the
    returned list can tie with it and the rank is the exact index's full-ranking rank."""
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if len(queries) != len(split):
        raise UserError(f"{len(queries)} query vectors for a split of {len(split)} users")
    n_items = index.n_items
    target = split.target
    out = {}
    scores, items = index.search(queries, min(k + 1, n_items))
    out["full/included"] = _ranks_from_results(scores, items, target, np.zeros(items.shape, bool), k)

    # Excluded: search k + 1 + (the user's seen items) deep, so that k + 1 candidates survive the removal
    # even if every seen item is returned. Depths are rounded up to a power of two and users searched in one
    # batch per depth: a handful of batched searches (a per-query IDSelector would need one faiss call per
    # user, and under HNSW filters during the graph walk, which is not "retrieve, then drop the seen").
    # Searching deeper than a user needs only appends candidates below those that matter (under HNSW it also
    # widens the beam, efSearch ≥ depth, so heavy users get a slightly more exact search).
    n_seen = np.diff(split.seen_ptr)
    depth = np.minimum(2 ** np.ceil(np.log2(k + 1 + n_seen)).astype(np.int64), n_items)
    excluded = np.empty(len(split), dtype=np.int64)
    for d in np.unique(depth):
        group = np.flatnonzero(depth == d)
        chunk = max(1, RESULTS_PER_SEARCH // int(d))  # bounds the [users, depth] result arrays
        for rows in (group[lo : lo + chunk] for lo in range(0, len(group), chunk)):
            scores, items = index.search(queries[rows], int(d))
            drop = _seen_mask(items, rows, split.seen_ptr, split.seen_items)
            excluded[rows] = _ranks_from_results(scores, items, target[rows], drop, k)
    out["full/excluded"] = excluded
    return out


# --- the table --------------------------------------------------------------------------------------
def recall_at_k(found: Int[np.ndarray, "n_queries k"], truth: Int[np.ndarray, "n_queries k"]) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (ids −1, "not found", never match)."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max((t >= 0).sum(), 1)
            for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else float("nan")


def retrieval_table(
    model: AttnOnlyTransformer,
    split: EvalSplit,
    kinds: tuple[str, ...] = INDEX_KINDS,
    k: int = 20,
    params: dict[str, dict] | None = None,
    keep: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per index kind: HR@10 and NDCG@10 under both policies (`full/included HR@10`, …), `recall@10`
    of the index's top 10 against the exact index's (policy included; exact = 1.0), `build_s`, `qps` (a plain
    top-10 batched search of all the split's user vectors, timed here), `n_items` and the `params` used.
    `params`: per kind, keyword arguments for `build_index`, e.g. {"hnsw": {"ef_search": 128}}; `keep`: the
    items the indexes hold (see `build_index`; default: those the model can recommend, `model.unscorable`
    left out, as in its full ranking)."""
    params = params or {}
    for kind in list(kinds) + list(params):
        if kind not in INDEX_KINDS:
            raise UserError(f"unknown index kind {kind!r} (one of {', '.join(INDEX_KINDS)})")
    if k < 10:
        raise UserError(f"k must be at least 10 for a table at cutoff 10, got {k}")
    if keep is None and model.unscorable is not None:
        keep = ~model.unscorable.numpy()
    queries = user_vectors(model, split)
    vectors = item_vectors(model)
    top = min(10, len(vectors) - 1)
    exact = build_index(vectors, "exact", keep, **params.get("exact", {}))
    truth = exact.search(queries, top)[1]
    rows = []
    for kind in kinds:
        index = exact if kind == "exact" else build_index(vectors, kind, keep, **params.get(kind, {}))
        t0 = time.perf_counter()
        found = index.search(queries, top)[1]
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"index": kind}
        for policy, ranks in retrieval_ranks(index, queries, split, k).items():
            m = metrics_from_ranks(ranks, ks=(10,))
            row[f"{policy} HR@10"], row[f"{policy} NDCG@10"] = m["HR@10"], m["NDCG@10"]
        row.update({"recall@10": recall_at_k(found, truth), "build_s": index.build_s,
                    "qps": len(queries) / seconds if seconds > 0 else float("inf"), "n_items": index.n_items,
                    "params": ", ".join(f"{p}={v}" for p, v in index.params.items())})
        rows.append(row)
    return pd.DataFrame(rows)
