"""Translation vector: how constant is what the attention layers add to the user vector?

For each attention layer, the vector it writes into the residual stream at the last position (the sum of
its heads' outputs) is collected over the users of a split. If it were the same for everyone, the layer
would only translate the user vector — a fixed offset, not a context-specific circuit. Two views:

- geometry: `mean_share` = ‖mean‖² / mean ‖v‖² (the part of the second moment that is the constant mean)
  and `along_mean` = mean (v·m̂)² / mean ‖v‖² (the part along the mean's direction);
- behaviour: NDCG@10 intact, with each head (and each whole layer) replaced by its dataset mean over real
  positions (mean-ablation), and set to zero (zero-ablation). If mean-ablation keeps most of what zero-
  ablation loses, the heads act as a translation.

    python -m analyses.translation runs/ml1m-L1 runs/ml1m-L2 --out reports/translation
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from circuits.interp.ablation import ablated_heads, mean_head_results
from circuits.model import strip_left_padding
from circuits.scoring.metrics import metrics_from_ranks, split_ranks


@torch.no_grad()
def layer_outputs(model, histories: np.ndarray, times: np.ndarray, batch: int = 256) -> dict[int, torch.Tensor]:
    """Per layer: its attention output at the last position, [n_users, d_model] (`times`: the histories'
    timestamps, read by time-gap attention)."""
    out: dict[int, list] = {l: [] for l in range(model.cfg.n_layers)}
    for lo in range(0, len(histories), batch):
        x, t = strip_left_padding(torch.from_numpy(histories[lo : lo + batch]), torch.from_numpy(times[lo : lo + batch]))
        _, cache = model.run_with_cache(x, times=t, names_filter=lambda n: n.endswith("hook_attn_out"))
        for l in out:
            out[l].append(cache[f"blocks.{l}.hook_attn_out"][:, -1])
    return {l: torch.cat(v) for l, v in out.items()}


def geometry(outputs: dict[int, torch.Tensor]) -> pd.DataFrame:
    rows = []
    for l, v in outputs.items():
        v = v.double()
        m = v.mean(0)
        second = (v * v).sum(1).mean()
        unit = m / m.norm().clamp_min(1e-30)
        rows.append({"layer": f"L{l + 1}", "mean_norm": float(m.norm()), "rms_norm": float(second.sqrt()),
                     "mean_share": float(m.dot(m) / second), "along_mean": float(((v @ unit) ** 2).mean() / second)})
    return pd.DataFrame(rows)


def ablations(model, split, d_vocab: int, policy: str) -> pd.DataFrame:
    """NDCG@10 intact and with each head / each layer mean- and zero-ablated."""
    from circuits.scoring.evaluator import model_scorer

    def ndcg() -> float:
        return metrics_from_ranks(split_ranks(model_scorer(model, split), split, d_vocab, n_sampled=0)[f"full/{policy}"])["NDCG@10"]

    means = mean_head_results(model, torch.from_numpy(split.history[:1024]), torch.from_numpy(split.history_times[:1024]))
    groups = {h: [h] for h in model.head_labels()}
    groups.update({f"L{l + 1} (all heads)": [h for h in model.head_labels() if h.startswith(f"L{l}H")]
                   for l in range(model.cfg.n_layers)})
    intact = ndcg()
    rows = []
    for name, heads in groups.items():
        with ablated_heads(model, {h: means[h] for h in heads}):
            mean_abl = ndcg()
        with ablated_heads(model, dict.fromkeys(heads)):
            zero_abl = ndcg()
        lost_zero = intact - zero_abl
        rows.append({"ablated": name, "intact": intact, "mean_ablated": mean_abl, "zero_ablated": zero_abl,
                     "kept_by_mean": (mean_abl - zero_abl) / lost_zero if abs(lost_zero) > 1e-12 else np.nan})
    return pd.DataFrame(rows)


def translation_vector(run, ds=None, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(geometry per layer, ablations per head and layer) for one run."""
    ds = ds or run.dataset()
    sp = ds.eval_split(split, run.model.cfg.n_ctx)
    policy = run.seen_policy
    geo = geometry(layer_outputs(run.model, sp.history, sp.history_times)).assign(run=run.path.name)
    abl = ablations(run.model, sp, ds.d_vocab, policy).assign(run=run.path.name, protocol=f"full/{policy}")
    return geo, abl


def translation_figure(abl: pd.DataFrame) -> go.Figure:
    from circuits.plots import LAYOUT, safe

    fig = go.Figure()
    labels = [f"{safe(r)} · {safe(a)}" for r, a in zip(abl["run"], abl["ablated"])]
    for col, name in (("intact", "intact"), ("mean_ablated", "mean-ablated"), ("zero_ablated", "zero-ablated")):
        fig.add_bar(name=name, x=labels, y=abl[col].round(4))
    fig.update_layout(**LAYOUT, title="Test NDCG@10: heads replaced by their mean vs removed", barmode="group",
                      yaxis_title="NDCG@10", height=420)
    return fig


def build_parser():
    from analyses.common import runs_parser

    return runs_parser("python -m analyses.translation", __doc__, "reports/translation")


def main(argv: list[str] | None = None) -> int:
    from analyses.common import load_runs, save

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
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
