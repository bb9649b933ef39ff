"""Report sections of the experiments (used by `python -m circuits.report --experiments`)."""

from __future__ import annotations

from circuits.report.page import Section


def experiment_sections(run, ds) -> list[Section]:
    from analyses.order import order_figure, order_sensitivity
    from analyses.same_item import same_item_attention, same_item_figure
    from analyses.translation import translation_figure, translation_vector

    order = order_sensitivity(run, ds)
    sec = Section("Experiment: order sensitivity", anchor="order")
    sec.text("Test NDCG@10 with the visible history shuffled (latest item kept, or not), reversed and de-duplicated; "
             "targets and candidates unchanged. A model that reads the history as a bag loses nothing when the "
             "earlier items are shuffled.")
    sec.table(order.drop(columns=["run"])).figure(order_figure(order))
    out = [sec]
    if run.model.cfg.n_layers == 0:
        return out
    geo, abl = translation_vector(run, ds)
    sec = Section("Experiment: translation vector", anchor="translation")
    sec.text("mean_share: part of the second moment of each layer's output (last position, over test users) that is "
             "its mean vector; along_mean: part along the mean's direction. Then NDCG@10 with heads replaced by "
             "their mean output vs removed; kept_by_mean = share of the removal loss the mean recovers (1 = the "
             "heads act as a constant translation of the user vector).")
    sec.table(geo.drop(columns=["run"])).table(abl.drop(columns=["run"])).figure(translation_figure(abl))
    out.append(sec)
    same = same_item_attention(run, ds)
    sec = Section("Experiment: same-item attention", anchor="same-item")
    sec.text("Attention on keys holding the query's own item (and near-identical items, embedding cosine ≥ 0.9): "
             "actual, from the head's positional preferences alone, and uniform.")
    sec.table(same.drop(columns=["run"])).figure(same_item_figure(same))
    out.append(sec)
    return out
