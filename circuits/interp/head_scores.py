"""Circuit scores of every head.

- `ov_copying`: Σλ / Σ|λ| over the eigenvalues λ of the OV circuit W_E W_OV W_U (computed from the small
  d_head × d_head factor product); near 1 = the head copies what it attends to.
- `ov_self_top`: share of items whose largest OV output is themselves; `qk_self_top`: share of items whose
  largest QK key (W_E W_QK W_Eᵀ) is themselves.
- `ov_bigram_corr`: mean over source items of the correlation between the head's OV row and the L0 bigram row
  (does the attended item boost what would follow it anyway?).
- `positional_share`: on real histories, of the attention-score variation across keys, the share due to terms
  that involve W_pos or a distance bias (vs. content alone and a time-gap bias).
- `induction` / `previous_item`: mean attention, on repeated random item sequences `s s`, to the item after the
  earlier copy of the current item / to the previous item (for attention over time gaps the sequences are one
  item a minute).
Composition (two or more layers): Q, K and V composition scores of every earlier head with every later head,
with the mean score of random matrices of the same shapes as a baseline.
All item × item work is blockwise; nothing n_items × n_items is built.
"""

from __future__ import annotations

import einops
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.utilities import composition_scores

from circuits.interp.circuit_pairs import circuit_factors
from circuits.interp.threads import one_thread
from circuits.model import AttnOnlyTransformer, distance_buckets, strip_left_padding, time_buckets

BLOCK = 2048


MAX_BLOCK_ENTRIES = 2**25  # item pairs scored at once: 128 MB per buffer in fp32 (2048 rows up to 16k items)


GRAM_COLUMNS = 2**16  # items per block of the Gram matrices (32 MB per factor of 64 rows in float64)


def _gram(R: Tensor, Q: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(R Qᵀ, R Rᵀ, Q Qᵀ, R 1, Q 1) in float64 for factors R [r, n] and Q [q, n] (padding column already dropped),
    in one pass over blocks of columns: memory of one block, at any number of items."""
    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.float64)

    RQ, RR, QQ = zeros(len(R), len(Q)), zeros(len(R), len(R)), zeros(len(Q), len(Q))
    R_sum, Q_sum = zeros(len(R)), zeros(len(Q))
    for lo in range(0, R.shape[1], GRAM_COLUMNS):
        r, q = R[:, lo : lo + GRAM_COLUMNS].double(), Q[:, lo : lo + GRAM_COLUMNS].double()
        RQ += r @ q.T
        RR += r @ r.T
        QQ += q @ q.T
        R_sum += r.sum(1)
        Q_sum += q.sum(1)
    return RQ, RR, QQ, R_sum, Q_sum


def _row_stats(left: Tensor, right: Tensor, reference: tuple[Tensor, Tensor] | None = None,
               rows: Tensor | None = None) -> tuple[float, float]:
    """(share of rows whose argmax is the diagonal, mean row correlation with `reference`'s rows), over `rows`
    (source items, default every item; each row exact, against every column but padding's).

    The argmax reads each row whole, blockwise. The correlations need no item × item block: with R = right and
    Q = the reference's right factor (padding column dropped, n columns), row i's scores s = lᵢ R and reference
    row r = mᵢ Q have Σⱼ sⱼ rⱼ = lᵢ (R Qᵀ) mᵢᵀ, Σⱼ sⱼ² = lᵢ (R Rᵀ) lᵢᵀ and Σⱼ sⱼ = lᵢ (R 1), so the centred
    products are quadratic forms in the rank-sized factors (in float64: the centring subtracts n·mean²); the
    Gram matrices over blocks of columns, the rows in blocks."""
    V = left.shape[0]
    rows = torch.arange(1, V) if rows is None else rows
    block = max(1, min(BLOCK, MAX_BLOCK_ENTRIES // V))
    if reference is not None:
        RQ, RR, QQ, R_sum, Q_sum = _gram(right[:, 1:], reference[1][:, 1:])
        n = right.shape[1] - 1  # columns without padding's
    self_top, corr = 0, 0.0
    for lo in range(0, len(rows), block):
        idx = rows[lo : lo + block]
        scores = (left[idx] @ right)[:, 1:]  # padding column dropped: column j ↔ item j + 1
        self_top += int((scores.argmax(1) + 1 == idx).sum())
        if reference is not None:
            L, M = left[idx].double(), reference[0][idx].double()
            s_sum, r_sum = L @ R_sum, M @ Q_sum
            cross = ((L @ RQ) * M).sum(1) - s_sum * r_sum / n
            s_var = ((L @ RR) * L).sum(1) - s_sum**2 / n
            r_var = ((M @ QQ) * M).sum(1) - r_sum**2 / n
            corr += float((cross / (s_var.clamp_min(0) * r_var.clamp_min(0)).sqrt().clamp_min(1e-12)).sum())
    return self_top / len(rows), corr / len(rows)


def sample_items(d_vocab: int, n: int, seed: int = 0) -> Tensor | None:
    """Sorted item indices of a seeded uniform sample of n of the d_vocab − 1 items; None for all (n = 0 or ≥)."""
    if not n or n >= d_vocab - 1:
        return None
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(np.arange(1, d_vocab), n, replace=False)))


def repeated_sequences(d_vocab: int, half: int, n: int, seed: int = 0) -> Tensor:
    """n sequences `s s`, s = `half` distinct random items: int64 [n, 2·half]."""
    g = torch.Generator().manual_seed(seed)
    s = torch.stack([torch.randperm(d_vocab - 1, generator=g)[:half] + 1 for _ in range(n)])
    return torch.cat([s, s], dim=1)


@torch.no_grad()
def induction_scores(model: AttnOnlyTransformer, half: int | None = None, n: int = 64, seed: int = 0) -> pd.DataFrame:
    """Per head: mean attention to the induction key (after the earlier copy) and to the previous item."""
    half = half or min(model.cfg.n_ctx // 2, 25)
    x = repeated_sequences(model.cfg.d_vocab, half, n, seed)
    times = (torch.arange(x.shape[1], dtype=torch.float64) * 60.0).expand(x.shape)  # read by time-gap attention only
    _, cache = model.run_with_cache(x, times=times, return_type=None)
    q = torch.arange(half, 2 * half)
    rows = []
    for l in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"]  # [n, heads, q, k]
        for h in range(model.cfg.n_heads):
            p = pattern[:, h]
            rows.append({"head": f"L{l}H{h}", "induction": float(p[:, q, q - half + 1].mean()),
                         "previous_item": float(p[:, torch.arange(1, 2 * half), torch.arange(0, 2 * half - 1)].mean())})
    return pd.DataFrame(rows).set_index("head")


def _key_variance(scores: Tensor, mask: Tensor, n_keys: Tensor | None = None) -> Tensor:
    """Variance across the allowed keys (`mask`: bool, or 0/1 floats) of each query's scores: [..., q, k] → [..., q];
    `n_keys`: the mask's sum over keys, when already at hand."""
    n_keys = mask.sum(-1).clamp_min(1) if n_keys is None else n_keys
    m = (scores * mask).sum(-1) / n_keys
    return (((scores - m[..., None]) ** 2) * mask).sum(-1) / n_keys


@torch.no_grad()
def positional_share(model: AttnOnlyTransformer, histories: Tensor, times: Tensor | None = None,
                     batch: int = 32) -> dict[str, float]:
    """Per head: share of the across-key variance of attention scores due to terms involving W_pos (and a distance
    bias), against the rest (content alone, and a time-gap bias), averaged over the real queries with two or more
    visible keys. Static attention: 1 over position distance alone, 0 over time gaps alone, NaN over both (not
    split); uniform: NaN (no scores). `times`: the histories' timestamps, for attention over time gaps.

    With r = c + p (content and position parts of a layer's input) and W_QK = W_Q W_Kᵀ/√d_head, the scores
    r W_QK rᵀ split into c W_QK cᵀ (content) and p W_QK rᵀ + c W_QK pᵀ (positional), each formed from the
    d_head-wide factors; histories are taken in batches of `batch` of similar length with their common padding
    stripped (`last_position.length_batches`): the work is about Σ length² rather than histories × n_ctx²."""
    from circuits.interp.last_position import layer_inputs, length_batches

    cfg = model.cfg
    if cfg.attention != "learned":
        one_kind = cfg.attention == "static" and not (cfg.distance_buckets and cfg.time_buckets)
        share = (1.0 if cfg.distance_buckets else 0.0) if one_kind else float("nan")
        return dict.fromkeys(model.head_labels(), share)
    over = cfg.static_over
    if model.W_pos is None and "distance" not in over:
        return {label: 0.0 for label in model.head_labels()}
    sums, n_queries = np.zeros(cfg.n_layers * cfg.n_heads), 0
    for rows in length_batches(histories.numpy(), batch):
        x, t = histories[rows], None if times is None else times[rows]
        x, t = (strip_left_padding(x), None) if t is None else strip_left_padding(x, t)
        pos_part, inputs = layer_inputs(model, x, t)
        n = x.shape[1]
        real = x != 0
        weights = (torch.ones(n, n, dtype=torch.bool).tril() & real[:, None, :] & real[:, :, None]).float()
        n_keys = weights.sum(-1)  # [b, q]: the visible real keys of each real query (0 for a padded one)
        ok, keys = n_keys > 1, n_keys.clamp_min(1)
        dist = distance_buckets(n, cfg.distance_buckets) if "distance" in over else None
        bucket = time_buckets(t, cfg.time_buckets) if "time" in over else None
        for l, block in enumerate(model.blocks):
            attn = block.attn
            whole = inputs[l]
            content = whole if pos_part is None else whole - pos_part
            q_c = einops.einsum(content, attn.W_Q, "b p d, h d e -> h b p e") / cfg.d_head**0.5
            k_c = einops.einsum(content, attn.W_K, "b p d, h d e -> h b p e")
            if pos_part is not None:
                q_p = einops.einsum(pos_part, attn.W_Q, "b p d, h d e -> h b p e") / cfg.d_head**0.5
                k_p = einops.einsum(pos_part, attn.W_K, "b p d, h d e -> h b p e")
            for h in range(cfg.n_heads):
                content_only = q_c[h] @ k_c[h].transpose(1, 2)
                if bucket is not None:
                    content_only += attn.W_time[h][bucket]
                positional = None
                if pos_part is not None:  # p W_QK rᵀ + c W_QK pᵀ as one product of [p | c] and [r | p]
                    left = torch.cat([q_p[h], q_c[h]], -1)
                    right = torch.cat([k_c[h] + k_p[h], k_p[h]], -1)
                    positional = left @ right.transpose(1, 2)
                if dist is not None:
                    bias = attn.W_dist[h][dist]
                    positional = bias.expand(len(x), n, n) if positional is None else positional.add_(bias)
                v_pos, v_content = _key_variance(positional, weights, keys), _key_variance(content_only, weights, keys)
                share = v_pos / (v_pos + v_content).clamp_min(1e-12)
                sums[l * cfg.n_heads + h] += float(share[ok].double().sum())
        n_queries += int(ok.sum())
    return {label: float(v / n_queries) if n_queries else float("nan") for label, v in zip(model.head_labels(), sums)}


@torch.no_grad()
def head_scores(model: AttnOnlyTransformer, histories: Tensor | None = None, items: int = 0, seed: int = 0,
                times: Tensor | None = None) -> pd.DataFrame:
    """One row per head with every score in the module docstring; the item scores (ov_self_top, qk_self_top,
    ov_bigram_corr) over a seeded sample of `items` source items (0 = all: n_items² work per head); `times`: the
    histories' timestamps, for attention over time gaps."""
    bigram = circuit_factors(model, "L0")
    sources = sample_items(model.cfg.d_vocab, items, seed)
    rows = []
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            label = f"L{l}H{h}"
            ov_l, ov_r = circuit_factors(model, f"OV:{label}")
            eig = FactoredMatrix(ov_l[1:], ov_r[:, 1:]).eigenvalues
            ov_self, ov_corr = _row_stats(ov_l, ov_r, bigram, sources)
            learned = model.cfg.attention == "learned"
            qk_self = _row_stats(*circuit_factors(model, f"QK:{label}"), rows=sources)[0] if learned else float("nan")
            rows.append({"head": label, "ov_copying": float(eig.sum().real / eig.abs().sum()),
                         "ov_self_top": ov_self, "ov_bigram_corr": ov_corr, "qk_self_top": qk_self})
    out = pd.DataFrame(rows).set_index("head")
    if not len(out):
        return out
    out = out.join(induction_scores(model))
    if histories is not None:
        out["positional_share"] = pd.Series(positional_share(model, histories, times))
    return out


def bucket_labels(kind: str, n_buckets: int) -> list[str]:
    """Readable bucket names: distance `self, 1 back, 2–3 back, …`; time `self, < 1 s, [1 s, 2 s), [2 s, 4 s),
    …` (half-open: the upper end belongs to the next bucket); the last bucket is open-ended."""
    from circuits.interp.frames import format_gap

    labels = ["self"]
    for b in range(1, n_buckets):
        if kind == "distance":
            lo, hi = 2 ** (b - 1), 2**b - 1
            text = f"{lo} back" if lo == hi else f"{lo}–{hi} back"
            last = f"≥ {lo} back"
        else:
            if b == 1:
                labels.append("< 1 s")
                continue
            lo, hi = 2.0 ** (b - 2), 2.0 ** (b - 1)
            text, last = f"[{format_gap(lo)}, {format_gap(hi)})", f"≥ {format_gap(lo)}"
        labels.append(last if b == n_buckets - 1 else text)
    return labels


def static_weights(model: AttnOnlyTransformer) -> pd.DataFrame:
    """Static attention's learned scores, the whole of its "QK circuit": one row per head × kind (distance /
    time) × bucket, with the bucket's label. Within a query, keys get softmax(score) over the visible ones."""
    rows = []
    for l, block in enumerate(model.blocks):
        for kind, name in (("distance", "W_dist"), ("time", "W_time")):
            if not hasattr(block.attn, name):
                continue
            W = getattr(block.attn, name).detach()
            labels = bucket_labels(kind, W.shape[1])
            for h in range(model.cfg.n_heads):
                rows.extend({"head": f"L{l}H{h}", "kind": kind, "bucket": b, "label": labels[b],
                             "score": float(W[h, b])} for b in range(W.shape[1]))
    return pd.DataFrame(rows, columns=["head", "kind", "bucket", "label", "score"])


def composition(model: AttnOnlyTransformer, n_random: int = 50, seed: int = 0) -> pd.DataFrame:
    """Long format: kind (Q/K/V), source head (earlier layer), target head, score, random baseline, excess."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), one_thread():  # d_model × d_head factors: see circuits.interp.threads
        # the baseline's n_random pairs of random factored matrices, drawn in the order of one pair at a time
        # (left A, left B, right A, right B) and scored in one batch: each score is the pair's own
        draws = [torch.randn(shape, generator=g) for _ in range(n_random)
                 for shape in ((cfg.d_model, cfg.d_head), (cfg.d_head, cfg.d_model)) * 2]
        left = FactoredMatrix(torch.stack(draws[0::4]), torch.stack(draws[1::4]))
        right = FactoredMatrix(torch.stack(draws[2::4]), torch.stack(draws[3::4]))
        baseline = float(np.mean(composition_scores(left, right, broadcast_dims=False).tolist()))
        # each head's circuits once: a FactoredMatrix caches its SVD, which every score of the head reuses
        OV, QK = model.OV, model.QK if cfg.attention == "learned" else None
        ov = {(l, h): OV[l, h] for l in range(cfg.n_layers) for h in range(cfg.n_heads)}
        qk = {} if QK is None else {(l, h): QK[l, h] for l in range(1, cfg.n_layers) for h in range(cfg.n_heads)}
        qk_T = {key: m.T for key, m in qk.items()}
        rows = []
        for l2 in range(1, cfg.n_layers):
            for l1 in range(l2):
                for i in range(cfg.n_heads):
                    for j in range(cfg.n_heads):
                        src = ov[l1, i]
                        kinds = [("V", ov[l2, j])] if QK is None else [("Q", qk[l2, j]), ("K", qk_T[l2, j]),
                                                                        ("V", ov[l2, j])]
                        for kind, dst in kinds:
                            s = composition_scores(src, dst, broadcast_dims=False).item()
                            rows.append({"kind": kind, "source": f"L{l1}H{i}", "target": f"L{l2}H{j}", "score": s,
                                         "baseline": baseline, "excess": s - baseline})
    return pd.DataFrame(rows)
