"""Translation vector: is what the attention layers add to the user vector a constant offset?

The user vector is the final residual stream at the last position of a history (its logits rank the next
item). The story's one-layer finding suggests that the attention layers add about the same vector to every
user's: a translation that moves it somewhere more useful, not a context-specific signal. Everything here is
measured at that last position; the earlier positions are left as they are.

- geometry, per layer (its output v at the last position, over the users of the split): `mean_share` =
  ‖mean‖² / mean ‖v‖² (the part of the second moment that is the constant mean) and `along_mean` =
  mean (v·m̂)² / mean ‖v‖² (the part along the mean's direction);
- behaviour: NDCG@10 on the split, intact and with the last-position output of each head, each layer and all
  attention layers together replaced by (a) its mean over the validation users (`mean_ablated`), (b) zero
  (`zero_ablated`: removed), and (c) for the last layer and for all layers together, whose replacement enters
  the logits linearly, the one constant vector that best predicts the validation targets (`fitted`: full-
  softmax cross-entropy, convex in the vector, solved by L-BFGS from the mean): the translation that fits
  the targets best (by cross-entropy, not NDCG). `kept_by_mean` and `kept_by_fitted` = the share of what removal loses that the constant recovers
  (1 = the heads act as a constant translation; 0 = no better than removing them).

    python -m analyses.translation runs/ml1m-L1 runs/ml1m-L2 --out reports/translation
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `--help` needs none of them
    import pandas as pd
    import plotly.graph_objects as go
    import torch

ALL_LAYERS = "all attention layers"


def last_position_outputs(model, split, batch: int = 256) -> dict[str, torch.Tensor]:
    """Over the users of `split`, each [n_users, d_model] at the last position of the history: every head's
    output (`L{l}H{h}`), every layer's (`L{l+1}`, the sum of its heads), the direct path (`direct` = embedding
    + position) and the residual stream entering the last layer (`into_last_layer`). One pass of
    `circuits.interp.last_position` (the last layer at the last query only), users in batches of at most `batch`."""
    from circuits.interp.last_position import OutputReader, read_split

    reader = OutputReader(len(split))
    reader.max_rows = batch
    read_split(model, split, [reader])
    return reader.outputs


def geometry(outputs: dict[int, torch.Tensor]) -> pd.DataFrame:
    """Per layer (key l → its outputs [n_users, d_model]): norms, `mean_share`, `along_mean`."""
    import pandas as pd

    rows = []
    for l, v in outputs.items():
        v = v.double()
        m = v.mean(0)
        second = (v * v).sum(1).mean()
        unit = m / m.norm().clamp_min(1e-30)
        rows.append({"layer": f"L{l + 1}", "mean_norm": float(m.norm()), "rms_norm": float(second.sqrt()),
                     "mean_share": float(m.dot(m) / second), "along_mean": float(((v @ unit) ** 2).mean() / second)})
    return pd.DataFrame(rows)


def fit_translation(base: torch.Tensor, targets: torch.Tensor, W_U: torch.Tensor, init: torch.Tensor,
                    max_iter: int = 100) -> torch.Tensor:
    """argmin_c mean CE(softmax((base + c) W_U), targets) over all items (padding never a candidate): the
    best constant vector to add to every user's `base` [n, d_model]. Convex in c; L-BFGS from `init`. The logits
    are base W_U (computed once) + c W_U: an evaluation of the loss and its gradient then costs no product with
    the users' vectors (the same sum; the gradient of c is W_U times the column sums of the logits' gradient)."""
    import torch
    import torch.nn.functional as F

    W_U = W_U.detach().double()
    fixed = base.detach().double() @ W_U  # [n, d_vocab]
    c = init.detach().double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([c], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def loss():
        opt.zero_grad()
        logits = fixed + c @ W_U
        logits[:, 0] = float("-inf")
        value = F.cross_entropy(logits, targets)
        value.backward()
        return value

    opt.step(loss)  # LBFGS runs the closure with gradients on, also when called under no_grad
    return c.detach().to(init.dtype)


def replacements(model, valid) -> tuple[list[tuple[str, str, list[int]]], dict]:
    """What the ablations replace, from the validation split: (the rows of the table: (name, kind, the layers of
    a layer row or [] for a head), the variants `circuits.interp.last_position.RankReader` evaluates, keyed by
    (name, replacement) with replacement in mean / zero / fitted). Each head's, each layer's and all layers' last-
    position output is replaced by its validation mean, by zero, and (last layer, all layers) by the fitted constant."""
    import torch

    L = model.cfg.n_layers
    out_valid = last_position_outputs(model, valid)
    means = {k: v.mean(0) for k, v in out_valid.items()}

    def fitted_constant(layers: list[int]) -> torch.Tensor | None:
        """The best constant for these layers' last-position outputs together, where it enters the logits
        linearly: all layers (on top of the direct path) or the last layer (on top of what enters it)."""
        if layers == list(range(L)):
            base, init = out_valid["direct"], sum(means[f"L{l + 1}"] for l in layers)
        elif layers == [L - 1]:
            base, init = out_valid["into_last_layer"], means[f"L{L}"]
        else:
            return None
        return fit_translation(base, torch.from_numpy(valid.target), model.W_U, init)

    rows, variants = [], {}
    for head in model.head_labels():
        rows.append((head, "head", []))
        variants[(head, "mean")] = {"heads": {head: means[head]}}
        variants[(head, "zero")] = {"heads": {head: None}}
    groups = {f"L{l + 1}": [l] for l in range(L)} | ({ALL_LAYERS: list(range(L))} if L > 1 else {})
    for name, layers in groups.items():
        rows.append((name, "layer" if len(layers) == 1 else "all layers", layers))
        fit = fitted_constant(layers)
        if fit is not None:  # the fitted constant stands for all the replaced layers at once: in the last, others 0
            variants[(name, "fitted")] = {"layers": {l: (fit if l == layers[-1] else None) for l in layers}}
        variants[(name, "mean")] = {"layers": {l: means[f"L{l + 1}"] for l in layers}}
        variants[(name, "zero")] = {"layers": dict.fromkeys(layers)}
    return rows, variants


def ablation_table(rows: list[tuple[str, str, list[int]]], ranks: dict, policy: str) -> pd.DataFrame:
    """The ablations' table from `replacements`' rows and the variants' ranks (`RankReader.ranks`): NDCG@10 on
    the evaluated split intact, mean-ablated, zero-ablated and fitted (NaN where no fitted constant), and the
    shares of the removal loss that the constants recover."""
    import numpy as np
    import pandas as pd

    from circuits.scoring.metrics import metrics_from_ranks

    def ndcg(key) -> float:
        return metrics_from_ranks(ranks[key][f"full/{policy}"])["NDCG@10"] if key in ranks else np.nan

    intact = ndcg("intact")
    table = pd.DataFrame([{"ablated": name, "kind": kind, "intact": intact, "mean_ablated": ndcg((name, "mean")),
                           "zero_ablated": ndcg((name, "zero")), "fitted": ndcg((name, "fitted"))}
                          for name, kind, _ in rows])
    lost = table["intact"] - table["zero_ablated"]
    with np.errstate(divide="ignore", invalid="ignore"):
        table["kept_by_mean"] = np.where(lost.abs() > 1e-12, (table["mean_ablated"] - table["zero_ablated"]) / lost, np.nan)
        table["kept_by_fitted"] = np.where(lost.abs() > 1e-12, (table["fitted"] - table["zero_ablated"]) / lost, np.nan)
    return table


def ablations(model, valid, test, d_vocab: int, policy: str) -> pd.DataFrame:
    """NDCG@10 on `test` intact and with the last-position output of each head, each layer and all layers
    replaced by its validation mean, by zero, and (last layer, all layers) by the fitted constant: every
    replacement evaluated in the same pass over the test users (`circuits.interp.last_position.model_ranks`)."""
    from circuits.interp.last_position import model_ranks

    rows, variants = replacements(model, valid)
    return ablation_table(rows, model_ranks(model, test, variants), policy)


def translation_tables(run, outputs: dict, ranks: dict, rows: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(geometry, ablations) of one run from the evaluated split's last-position `outputs` (`OutputReader`) and
    the ranks of `replacements`' variants on it (`RankReader`)."""
    geo = geometry({l: outputs[f"L{l + 1}"] for l in range(run.model.cfg.n_layers)}).assign(run=run.path.name)
    policy = run.seen_policy
    abl = ablation_table(rows, ranks, policy).assign(run=run.path.name, protocol=f"full/{policy}")
    return geo, abl


def translation_vector(run, ds=None, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(geometry per layer on `split`, ablations per head / layer / all layers on `split`) for one run; the
    means and the fitted constants come from the validation split. One pass over each split."""
    from circuits.interp.last_position import OutputReader, RankReader, read_split

    ds = ds or run.dataset()
    n_ctx = run.model.cfg.n_ctx
    valid, evaluated = ds.eval_split("valid", n_ctx), ds.eval_split(split, n_ctx)
    rows, variants = replacements(run.model, valid)
    ranks, outputs = RankReader(run.model, evaluated, variants), OutputReader(len(evaluated))
    read_split(run.model, evaluated, [ranks, outputs])
    return translation_tables(run, outputs.outputs, ranks.ranks, rows)


def translation_figure(abl: pd.DataFrame) -> go.Figure:
    import plotly.graph_objects as go

    from circuits.plots import LAYOUT, safe

    fig = go.Figure()
    labels = [f"{safe(r)} · {safe(a)}" for r, a in zip(abl["run"], abl["ablated"])]
    for col, name in (("intact", "intact"), ("fitted", "best constant (fitted)"), ("mean_ablated", "mean"),
                      ("zero_ablated", "removed")):
        fig.add_bar(name=name, x=labels, y=abl[col].round(4))
    fig.update_layout(**LAYOUT, title="Test NDCG@10 with the last-position output replaced by a constant vs removed",
                      barmode="group", yaxis_title="NDCG@10", height=420)
    return fig


def build_parser():
    from analyses.common import runs_parser

    return runs_parser("python -m analyses.translation", __doc__, "reports/translation")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import pandas as pd

    from analyses.common import load_runs, save

    parts = [translation_vector(r, ds, split=args.split) for r, ds in load_runs(args, need_attention=True)]
    geo = pd.concat([g for g, _ in parts], ignore_index=True)
    abl = pd.concat([a for _, a in parts], ignore_index=True)
    print(geo.to_string(index=False, float_format="%.4f"))
    print()
    print(abl.to_string(index=False, float_format="%.4f"))
    print("\n" + save(args.out, {"geometry": geo, "ablations": abl}, ("translation", translation_figure(abl))))
    return 0


if __name__ == "__main__":
    from circuits.cli import run_cli

    run_cli(main)
