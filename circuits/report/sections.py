"""Section builders: a loaded run (and its dataset) in, a `Section` of tables and figures out.

Each builder uses the library's analyses (ranks, pairs, heads, sources, decomposition) and the plotting
helpers; none of them computes anything the library does not also return as a DataFrame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from circuits import plots
from circuits.report.page import Section

GROUP_ORDER_NOTE = ("L0 = embed + pos (the direct, bigram path); L1 = all layer-0 heads; L2 = all layer-1 heads; "
                    "L0+L1, L0+L1+L2 = cumulative sums (the last is the full model).")


def run_name(run) -> str:
    return run.path.name


def is_group(component: str) -> bool:
    return component == "L0" or all(part[1:].isdigit() for part in component.split("+"))


# --- run card ---------------------------------------------------------------------------------------------

def metrics_frame(run, split: str = "test") -> pd.DataFrame:
    """Model and baselines on `split`: full ranking under the run's seen policy first, sampled last."""
    from circuits.scoring.evaluator import metrics_table

    policy = run.seen_policy
    t = metrics_table(run.metrics)
    t = t[t["split"] == split].drop(columns="split")
    order = {f"full/{policy}": 0, f"full/{'included' if policy == 'excluded' else 'excluded'}": 1, "sampled": 2}
    t = t.assign(_o=t["protocol"].map(order)).sort_values(["_o"], kind="stable").drop(columns="_o")
    t["protocol"] = t["protocol"].replace({"sampled": "sampled-100 (SAMPLED: flatters, not comparable)"})
    return t.reset_index(drop=True)


def run_card(run) -> Section:
    cfg, train, data = run.config["model"], run.config["train"], run.config["data"]
    summary, training = data["summary"], run.metrics.get("training", {})
    n_params = sum(p.numel() for p in run.model.parameters())
    facts = pd.DataFrame([
        ("data", summary.get("name", data["source"])),
        ("users / items / interactions", f"{summary['users']:,} / {summary['items']:,} / {summary['interactions']:,}"),
        ("model", f"{cfg['n_layers']} attention layer(s) × {cfg['n_heads']} heads "
                  f"({run.model.cfg.attention_label} attention), d_model {cfg['d_model']}, "
                  f"d_head {cfg['d_head']}, context {cfg['n_ctx']}, positions {'learned' if cfg['positional'] else 'none'}"
                  f", {'tied' if cfg['tied'] else 'untied'} unembedding, {n_params:,} parameters"),
        ("items", item_sides_text(run)),
        ("training", f"{training.get('minutes', float('nan')):.1f} min, best epoch {training.get('best_epoch')} of "
                     f"{training.get('epochs_run')} (stopped by {training.get('stopped_by')}), lr {train['lr']}, "
                     f"batch {train['batch_size']}, negatives {train.get('resolved_negatives')}"),
        ("checkpoint", f"chosen on {training.get('selection', 'validation')}; test read once, after training"),
        ("run directory", str(run.path)),
    ], columns=["", "value"])
    t = metrics_frame(run)
    sec = Section("Run card", anchor="card")
    sec.table(facts).heading("Test metrics (model next to the baselines)")
    sec.text(f"Full ranking over all {summary['items']:,} items first (pessimistic ties); the seen-item policy of this "
             f"data is '{run.seen_policy}'. The sampled protocol is shown last and labelled: it ranks the target "
             "against 100 random unseen items and overstates every model.")
    sec.table(t)
    full = t[t["protocol"].str.startswith("full/")]
    sec.figure(plots.metrics_bars(full, title="Test NDCG@10, full ranking"))
    if "test/cold" in run.metrics.get("model", {}):
        users = run.metrics.get("users", {})
        sec.heading("Cold and warm test targets")
        sec.text(f"Cold: test targets never seen in training ({users.get('test/cold', '?')} users); warm: the others "
                 f"({users.get('test/warm', '?')} users). An id output cannot recommend a cold item (it has no "
                 "trained vector for it: ranked last); a text output scores it from its text.")
        for split in ("test/cold", "test/warm"):
            part = metrics_frame(run, split)
            sec.table(part[part["protocol"] == f"full/{run.seen_policy}"].assign(split=split))
    return sec


def item_sides_text(run) -> str:
    """How items enter and leave the model, and where a text model's embeddings came from."""
    cfg = run.model.cfg
    words = {"id": "a learned vector per item", "text": "frozen text embeddings × a learned projection",
             "hybrid": "text embeddings × a projection + a learned vector per item"}
    text = f"in (W_E): {words[cfg.embed_side]}; out (W_U): {words[cfg.unembed_side]}"
    meta = run.config.get("text")
    if meta:
        details = [f"{cfg.d_text} dims"]
        if meta.get("model_sha256"):
            details.append(f"weights sha256 {meta['model_sha256'][:12]}…")
        if meta.get("columns"):
            details.append(f"columns {', '.join(meta['columns'])}")
        text += f"; text embeddings: {meta.get('model', meta.get('source'))} ({', '.join(details)})"
    return text


# --- rank by component ------------------------------------------------------------------------------------

REPORT_RANK_ENTRIES = 5 * 10**9  # default rank section: all test users while users × items stays below this


def report_eval_users(ds, eval_users: int | None = None) -> int:
    """How many test users the rank section ranks: `eval_users` (0 = all), or by default (None) all of them while
    users × items ≤ REPORT_RANK_ENTRIES (every report of a small or mid-sized log: ML-20M's 138k × 27k), else a
    sample of REPORT_RANK_ENTRIES // n_items (5,000 at a million items: minutes on 2 cores, not hours)."""
    if eval_users is not None:
        return eval_users
    eligible = int((ds.lengths >= 3).sum())
    return 0 if eligible * ds.n_items <= REPORT_RANK_ENTRIES else max(1, REPORT_RANK_ENTRIES // ds.n_items)


def rank_table_for(run, ds, split: str = "test", eval_users: int = 0, eval_seed: int = 0) -> pd.DataFrame:
    """The rank table of `split` for all its users, or a seeded sample of `eval_users` of them
    (`sample_eval_users`: the same users for every run on the same data)."""
    from circuits.data.sequences import sample_eval_users
    from circuits.interp.ranks import rank_table

    users = sample_eval_users(ds, eval_users, eval_seed)
    sp = ds.eval_split(split, run.model.cfg.n_ctx, users=users)
    return rank_table(run.model, ds, sp, exclude_seen=run.seen_policy == "excluded")


def users_text(ds, table: pd.DataFrame, eval_seed: int = 0) -> str:
    """"every test user" or "a seeded sample of N of M test users (seed S)", for the table's users."""
    n, eligible = table["user_id"].nunique(), int((ds.lengths >= 3).sum())
    if n >= eligible:
        return "every test user"
    return f"a seeded sample of {n:,} of {eligible:,} test users (seed {eval_seed}; --eval-users, --eval-seed)"


def rank_quantiles(table: pd.DataFrame, groups_only: bool = True) -> pd.DataFrame:
    t = table[table["component"].map(is_group)] if groups_only else table
    q = t.groupby("component", sort=False)["rank"].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
    q.columns = ["q05", "q25", "median", "q75", "q95"]
    return q.reset_index()


def layer_gains(table: pd.DataFrame) -> pd.DataFrame:
    """Share of users whose target ranks strictly better after adding each layer (L0 → L0+L1 → …)."""
    wide = table.pivot(index="user_id", columns="component", values="rank")
    chain = [c for c in wide.columns if c == "L0" or (c.startswith("L0+") and is_group(c))]
    chain.sort(key=len)
    return pd.DataFrame([{"step": f"{a} → {b}", "share": float((wide[b] < wide[a]).mean())}
                         for a, b in zip(chain, chain[1:])])


def rank_section(run, table: pd.DataFrame, n_items: int, users: str = "every test user") -> Section:
    """`users`: whose ranks these are (`users_text`)."""
    from circuits.interp.ranks import rank_summary

    sec = Section("Rank by component", anchor="ranks")
    sec.text(f"Where the correct next item ranks (1 = best among {n_items:,}; pessimistic ties) when the logits come "
             f"from one component alone, for {users}. {GROUP_ORDER_NOTE} Boxes: quartiles; whiskers: 5th and "
             "95th percentiles; log scale.")
    sec.figure(plots.rank_boxes(rank_quantiles(table), n_items=n_items))
    gains = layer_gains(table)
    if len(gains):
        sec.figure(plots.share_bars(gains))
    summary = rank_summary(table).reset_index()
    sec.table(summary, float_format="{:.3f}")
    for k, v in summary.attrs.items():
        sec.text(f"{k.replace('_', ' ')}: {v:.1%}")
    return sec


def representative_users(table: pd.DataFrame, k: int = 3) -> list[str]:
    """The median user under the full model, the one the attention layers help most and the one they hurt
    most (by log-rank change from L0 to the full model); for a 0-layer model, median, best and worst."""
    wide = table.pivot(index="user_id", columns="component", values="rank")
    full = max((c for c in wide.columns if is_group(c)), key=len)
    order = wide[full].sort_values(kind="stable")
    picks = [order.index[len(order) // 2]]
    if full != "L0":
        change = (np.log(wide[full]) - np.log(wide["L0"])).sort_values(kind="stable")
        picks += [change.index[0], change.index[-1]]
    else:
        picks += [order.index[0], order.index[-1]]
    out = []
    for u in picks + list(order.index):
        if u not in out:
            out.append(u)
        if len(out) == k:
            break
    return [str(u) for u in out]


# --- top pairs --------------------------------------------------------------------------------------------

REPORT_PAIR_ITEMS = 50_000  # top pairs among at most this many items (the most frequent): ≤ 2.5·10⁹ pairs a circuit


def pairs_section(run, ds, top: int = 10, min_count: int = 0, max_items: int = REPORT_PAIR_ITEMS) -> Section:
    """Top pairs of L0 and each head's OV and QK among the items with ≥ `min_count` training occurrences, and
    only the `max_items` most frequent of those (a bound on the work whatever the weights: the exact search skips
    most of a trained model's item pairs, but not those of one whose item vectors all have similar norms)."""
    from circuits.interp.circuit_pairs import frequent_items, pair_table

    sec = Section("Top document pairs", anchor="pairs")
    if min_count:
        sec.text(f"Only items with at least {min_count} training occurrences (rare items have large, noisy weights).")
    keep = frequent_items(ds.train_counts(), min_count)
    if max_items and (ds.n_items if keep is None else int(keep.sum())) > max_items:
        sec.text(f"Only the {max_items:,} most frequent items (training occurrences) of the {ds.n_items:,}.")
    sec.text("Largest entries of each circuit's item × item table, exact, computed blockwise (the table is never built): "
             "L0 = W_E W_U (current item → next item); OV = W_E W_V W_O W_U (attended item → boosted item); "
             "QK = W_E W_Q (W_E W_K)ᵀ/√d_head (query item → attended item). Counts are training occurrences; "
             "pair count = how often the second item directly followed the first in training.")
    kinds = ("OV", "QK") if run.model.cfg.attention == "learned" else ("OV",)
    circuits = ["L0"] + [f"{kind}:{h}" for h in run.model.head_labels() for kind in kinds]
    parts = []
    for c in circuits:
        t = pair_table(run.model, ds, c, top=top, min_count=min_count, max_items=max_items)
        t = t[["source_title", "target_title", "value", "source_count", "target_count", "pair_count"]]
        parts.append(Section(c).heading(c).table(t.rename(columns={"source_title": "from", "target_title": "to"}),
                                                 float_format="{:.2f}"))
    sec.grid(parts)
    return sec


REPORT_HEAD_ITEMS = 1_000  # beyond REPORT_PAIR_ITEMS items: the item-level head scores over this many sources


# --- head scores --------------------------------------------------------------------------------------------

def heads_section(run, ds) -> Section | None:
    from circuits.interp.head_scores import composition, head_scores
    from circuits.interp.ranks import residual_only
    from circuits.interp.sources import same_item_table

    model = run.model
    if model.cfg.n_layers == 0:
        return None
    # the first 256 validation users (only those are built: a split of every user is n_users × n_ctx)
    valid = ds.eval_split("valid", model.cfg.n_ctx, users=np.flatnonzero(ds.lengths >= 3)[:256])
    sampled = REPORT_HEAD_ITEMS if ds.n_items > REPORT_PAIR_ITEMS else 0  # item scores: n_items² work per head
    with residual_only(model):  # both read cached activations only: no batch × n_ctx × d_vocab logits
        scores = head_scores(model, torch.from_numpy(valid.history), items=sampled,
                             times=torch.from_numpy(valid.history_times))
        same = same_item_table(model, valid.history, times=valid.history_times)
    scores["same_item_share"] = same[same["pattern"] == "actual"].set_index("head")["same"]
    sec = Section("Head scores", anchor="heads")
    sec.text("ov_copying: Σλ/Σ|λ| of the OV circuit's eigenvalues (1 = pure copying); ov_self_top / qk_self_top: share of "
             "items whose top OV output / top QK key is themselves; ov_bigram_corr: agreement of the head's OV table "
             "with the L0 bigram table; positional_share: share of attention-score variance from positions; "
             "same_item_share: attention on the query's own item (itself and earlier occurrences) over validation histories; "
             "induction / previous_item: attention on repeated random sequences.")
    if sampled:
        sec.text(f"ov_self_top, qk_self_top and ov_bigram_corr over a seeded sample of {sampled:,} of the "
                 f"{ds.n_items:,} source items (each against every item).")
    sec.table(scores, float_format="{:.3f}", index=True)
    sec.figure(plots.head_score_bars(scores, ["ov_copying", "ov_self_top", "qk_self_top", "ov_bigram_corr",
                                              "positional_share", "same_item_share"], "Circuit scores per head"))
    sec.figure(plots.head_score_bars(scores, ["induction", "previous_item"], "Induction and previous-item scores"))
    comp = composition(model)
    if len(comp):
        sec.figure(plots.composition_heatmap(comp))
    if model.cfg.has_static_scores:
        from circuits.interp.head_scores import static_weights

        weights = static_weights(model)
        if model.cfg.attention == "static":
            sec.heading("Static attention weights")
            sec.text("The whole of a static head's attention: a learned score per bucket of how far back (items) "
                     "and/or how long before (time) the key is; each query's weights are the softmax of these scores "
                     "over its visible keys.")
        else:
            sec.heading("Static score biases")
            sec.text("Added to each head's QK scores before the softmax: a learned score per bucket of how far back "
                     "(items) and/or how long before (time) the key is. A key's weight is the softmax of its QK score "
                     "plus its bucket's bias.")
        for kind in weights["kind"].unique():
            sec.figure(plots.static_weight_lines(weights, kind))
    return sec


# --- chosen sequences: attention patterns and decomposition -------------------------------------------------

def attention_figures(run, ds, user_id: str, window: int = 30, cache=None) -> list:
    """One heatmap per head for the user's test history (its last `window` items); `cache`: its activations, if
    at hand (`decomposition.sequence_cache`)."""
    from circuits.interp.decomposition import sequence_cache, visible_window

    start, end = visible_window(ds, user_id, "test", run.model.cfg.n_ctx)
    items = np.array(ds.items[start:end])  # a copy: the dataset's arrays may be read-only (memory-mapped)
    times = ds.timestamps[start:end].astype(float)
    if cache is None:
        cache = sequence_cache(run.model, ds, user_id, "test")
    keep = slice(max(0, len(items) - window), len(items))
    titles = list(ds.titles[items[keep]])
    gaps = times[keep][:, None] - times[keep][None, :]
    figs = []
    for l in range(run.model.cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"][0].numpy()
        for h in range(run.model.cfg.n_heads):
            p = pattern[h][keep, keep]
            hidden = 1 - p.sum(1)[-1]
            note = (f"<br><sup>last query: {hidden:.0%} of its attention on earlier items not shown</sup>"
                    if hidden > 0.005 else "")
            figs.append(plots.attention_heatmap(p, titles, gaps, title=f"L{l}H{h} · user {plots.safe(user_id)}{note}"))
    return figs


def sequences_section(run, ds, user_ids: list[str], window: int = 30, caches: dict | None = None) -> Section:
    """`caches`: the users' activations, if at hand (user → `decomposition.sequence_cache`)."""
    caches = caches or {}
    sec = Section("Attention patterns", anchor="attention")
    sec.text(f"Test histories of chosen users (the last {window} items; padding hidden). Rows: query positions, "
             "each predicting the next item; columns: attended items. Hover for titles, weight and time gap.")
    for u in user_ids:
        sec.heading(f"user {u}")
        figs = attention_figures(run, ds, u, window, caches.get(u))
        if not figs:
            sec.text("a 0-layer model has no attention")
        for f in figs:
            sec.figure(f)
    return sec


def decomposition_section(run, ds, user_ids: list[str], top: int = 3, caches: dict | None = None) -> Section:
    """`caches`: the users' activations, if at hand (user → `decomposition.sequence_cache`)."""
    from circuits.interp.decomposition import decompose_sequence

    caches = caches or {}
    sec = Section("Decomposition of the chosen sequences", anchor="decomposition")
    sec.text(f"The logits of the last position split exactly into components; for each, the correct item's logit, its "
             f"rank among all items (history included; pessimistic ties) and the top {top} items. {GROUP_ORDER_NOTE}")
    for u in user_ids:
        view = decompose_sequence(run, ds, u, "test", top=top, cache=caches.get(u))
        sec.heading(f"user {u}: target '{view['target_title']}'")
        comps = view["components"].assign(top_items=lambda d: d.top_items.map(" | ".join))
        sec.table(comps, float_format="{:.3f}")
    return sec
