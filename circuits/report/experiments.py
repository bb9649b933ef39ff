"""The report's sections for the experiments of `analyses/` (`python -m circuits.report --experiments`, and
the depth sweep page `--sweep`)."""

from __future__ import annotations

import pandas as pd

from circuits.report.page import Section


def sweep_sections(folder) -> list[Section]:
    """A depth sweep folder (`python -m analyses.depth`): NDCG@10 by depth with the spread over seeds, the
    runs, and the validation learning curves."""
    from analyses.depth import curves_figure, depth_figure, depth_table, learning_curves, sweep_runs

    runs = sweep_runs(folder)
    rows, summary = depth_table(runs)
    train = runs[0].config["train"]
    budget = ", ".join(b for b in (f"{train['max_minutes']:g} min" if train.get("max_minutes") else "",
                                   f"{train['epochs']} epochs" if train["epochs"] < 100000 else "") if b)
    sec = Section("Experiment: depth sweep", anchor="depth")
    sec.text(f"{len(runs)} runs on the same data with the same budget per model ({budget or 'until early stopping'}); "
             "one row per depth: mean and standard deviation over seeds of validation and test NDCG@10 (full "
             "ranking; the checkpoint of each run chosen on validation).")
    sec.table(summary).figure(depth_figure(summary))
    sec.heading("Runs")
    sec.table(rows.drop(columns=["run"]).assign(run=[r.path.name for r in runs]))
    sec.figure(curves_figure(learning_curves(runs)))
    return [sec]


def diagnostics_section(ds) -> Section:
    """The data simplicity diagnostics of the run's data (no model involved)."""
    from analyses.diagnostics import diagnostics, diagnostics_figure, format_value

    table = diagnostics(ds)
    sec = Section("Experiment: data diagnostics", anchor="diagnostics")
    sec.text("How simple is next-item prediction on this data before any model? Over the test targets: A→A rate "
             "(target = latest item), target anywhere in the history, target unrelated to every history item (no "
             "training user holds both: the AAAA→C case); NDCG@10 of most-popular, the bigram count model and the "
             "order-free bag-of-history co-occurrence model; time gaps and sessions (30-minute breaks).")
    sec.table(pd.DataFrame({"statistic": table.columns, "value": [format_value(v) for v in table.iloc[0].tolist()]}))
    sec.figure(diagnostics_figure(table))
    return sec


class TestPass:
    """The experiments' share of the report's one pass over the test split (`last_position.read_split` with
    `readers`): the intact user vectors' ranks (order sensitivity's `intact`) and, with attention layers, the
    translation experiment's replacements (means and fitted constants from the validation split) evaluated on
    the same pass, with the last-position outputs of its geometry."""

    def __init__(self, run, ds, test):
        from analyses.translation import replacements
        from circuits.interp.last_position import OutputReader, RankReader

        model = run.model
        self.rows, variants = replacements(model, ds.eval_split("valid", model.cfg.n_ctx)) if model.cfg.n_layers \
            else ([], {})
        self.ranks = RankReader(model, test, variants)
        self.outputs = OutputReader(len(test)) if model.cfg.n_layers else None
        self.readers = [self.ranks] + ([self.outputs] if self.outputs is not None else [])


def experiment_sections(run, ds, shared: TestPass | None = None) -> list[Section]:
    """The experiments' sections on the test split; `shared`: its pass already read (`TestPass`, every test
    user), else each experiment makes its own."""
    from analyses.order import order_figure, order_sensitivity
    from analyses.same_item import same_item_attention, same_item_figure
    from analyses.translation import translation_figure, translation_tables, translation_vector

    out = [diagnostics_section(ds)]
    order = order_sensitivity(run, ds, intact=shared.ranks.ranks["intact"] if shared else None)
    sec = Section("Experiment: order sensitivity", anchor="order")
    sec.text("Test NDCG@10 with the visible history shuffled (latest item kept, or not), reversed and de-duplicated; "
             "targets and candidates unchanged. A model that reads the history as a bag loses nothing when the "
             "earlier items are shuffled.")
    sec.table(order.drop(columns=["run"])).figure(order_figure(order))
    out.append(sec)
    if run.model.cfg.n_layers == 0:
        return out
    geo, abl = translation_tables(run, shared.outputs.outputs, shared.ranks.ranks, shared.rows) if shared \
        else translation_vector(run, ds)
    sec = Section("Experiment: translation vector", anchor="translation")
    sec.text("Does attention add the same vector to every user vector (the last position)? mean_share: part of the "
             "second moment of each layer's last-position output, over test users, that is its mean vector; "
             "along_mean: part along the mean's direction. Then test NDCG@10 with the last-position output of each "
             "head, layer and all layers replaced by its validation mean, removed, and (last layer, all layers) "
             "replaced by the best constant vector fitted on validation; kept_by_mean / kept_by_fitted = share of "
             "the removal loss the constant recovers (1 = the heads act as a constant translation).")
    sec.table(geo.drop(columns=["run"])).table(abl.drop(columns=["run"])).figure(translation_figure(abl))
    out.append(sec)
    same = same_item_attention(run, ds)
    sec = Section("Experiment: same-item attention", anchor="same-item")
    basis = "the items' text embeddings" if run.model.cfg.uses_text else "W_E"
    sec.text("Attention on keys holding the query's own item (same), on near-identical items (near: cosine ≥ 0.9 "
             f"of {basis}, own item included) and, on synthetic data, on the query's planted near-duplicates "
             "(twin: the same story under another id): actual, from the head's positional preferences alone, and "
             "uniform.")
    sec.table(same.drop(columns=["run"])).figure(same_item_figure(same))
    out.append(sec)
    return out


CAUSAL_EDGES_SHOWN = 60  # strongest edges drawn in the network (all are in the folder's dag_edges.csv)


def causal_section(folder, max_edges: int = CAUSAL_EDGES_SHOWN) -> Section:
    """A cluster DAG folder (`python -m analyses.causal`): what was fitted, the DAG as a network (its strongest
    `max_edges` edges), the edge table with the training transitions both ways, SHD / TPR / FDR against a planted
    DAG when there is one, and the DAG-logits table when `python -m analyses.dag_logits` wrote one there."""
    import json
    from pathlib import Path

    from circuits import plots
    from circuits.errors import UserError

    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text())
        edges = pd.read_csv(folder / "dag_edges.csv", keep_default_na=False,
                            dtype={"source_name": str, "target_name": str})
        clusters = pd.read_csv(folder / "clusters.csv", keep_default_na=False, dtype={"name": str})
    except (OSError, ValueError) as e:
        raise UserError(f"{folder} is not a cluster DAG folder (python -m analyses.causal): {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}") from None
    g, c = summary["golem"], summary["clusters"]
    sec = Section("Causal discovery: cluster DAG", anchor="causal")
    sec.text(f"GOLEM-{g['config']['variant'].upper()} ({sum(g['iterations'].values()):,} steps, {g['seconds']:.0f} s, "
             f"stopped: {g['stopped']}) on the {summary['matrix']} user × cluster matrix of {summary['data']}'s "
             f"training parts ({summary['users']:,} users × {c['k']} clusters by {c['method']}; "
             f"{summary['fitted_clusters']} fitted), edges kept above |weight| {g['threshold']}: {len(edges)} edges, "
             f"acyclic: {summary['is_dag']}. An edge a → b says that reading b is explained by reading a across users; "
             "the matrix has no order in it, so the transition counts (a then b, and b then a, in the training "
             "sequences) show whether users actually move that way.")
    planted = summary.get("planted")
    if planted:
        sec.text(f"Against the planted cluster DAG ({planted['true_edges']} edges): SHD {planted['shd']}, "
                 f"TPR {planted['tpr']:.3f}, FDR {planted['fdr']:.3f} ({planted['reversed']} found reversed).")
    if len(edges):
        shown = edges.head(max_edges)
        more = f", the {max_edges} strongest of {len(edges)}" if len(edges) > max_edges else ""
        sec.figure(plots.dag_network(shown, clusters, title=f"Cluster DAG ({len(shown)} edges{more})"))
        sec.table(edges.head(20)[["source_name", "target_name", "weight", "transitions", "reverse_transitions"]]
                  .rename(columns={"source_name": "cause", "target_name": "effect"}), float_format="{:+.3f}")
    else:
        sec.text("No edge above the threshold.")
    logits = folder / "dag_logits.csv"
    if logits.exists():
        table = pd.read_csv(logits)
        meta = json.loads((folder / "dag_logits.json").read_text()) if (folder / "dag_logits.json").exists() else {}
        sec.heading("DAG logits")
        sec.text(f"Next-item scores + w · A[cluster(last item), cluster(candidate)], ranked over all items "
                 f"({meta.get('protocol', 'full ranking')}); w chosen on validation NDCG@10 or, for a model, learned "
                 "on training targets; Δ = paired test difference to w = 0 with its standard error over users.")
        sec.table(table)
    return sec
