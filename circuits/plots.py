"""Plotting helpers: tidy DataFrames in, plotly figures out (no I/O, no HTML).

Text that reaches a figure (titles, labels) is passed through `safe` first: plotly draws a subset of HTML
tags inside labels and decodes entities, so escaping makes an untrusted title display as literal text.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from circuits.interp.frames import format_gap

LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), font=dict(size=13))


def safe(text: object, limit: int | None = None) -> str:
    """Untrusted text → a label plotly shows verbatim (escaped; optionally shortened with an ellipsis)."""
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=True)


def metrics_bars(table: pd.DataFrame, metric: str = "NDCG@10", title: str = "") -> go.Figure:
    """`table`: rows (system, protocol, metric columns) → grouped bars, one group per protocol."""
    fig = go.Figure()
    for system, g in table.groupby("system", sort=False):
        fig.add_bar(name=safe(system), x=[safe(p) for p in g["protocol"]], y=g[metric].round(4),
                    hovertemplate="%{x}<br>" + safe(system) + ": %{y:.4f}<extra></extra>")
    fig.update_layout(**LAYOUT, title=title or f"{metric}", barmode="group", yaxis_title=metric, height=360)
    return fig


def rank_boxes(summary: pd.DataFrame, title: str = "Target rank by component", n_items: int | None = None) -> go.Figure:
    """`summary`: one row per component (and optionally `run`) with q05, q25, median, q75, q95 of the target's
    rank → precomputed box plots on a log axis (whiskers: 5th and 95th percentiles)."""
    fig = go.Figure()
    runs = summary["run"].unique() if "run" in summary else [None]
    for run in runs:
        s = summary if run is None else summary[summary["run"] == run]
        fig.add_trace(go.Box(
            name=safe(run) if run is not None else "rank", x=[safe(c) for c in s["component"]],
            q1=s["q25"], median=s["median"], q3=s["q75"], lowerfence=s["q05"], upperfence=s["q95"],
            hovertemplate="%{x}<br>median %{median:,.0f}<br>quartiles %{q1:,.0f} – %{q3:,.0f}<br>"
                          "5–95%: %{lowerfence:,.0f} – %{upperfence:,.0f}<extra></extra>",
        ))
    fig.update_layout(**LAYOUT, title=title, yaxis_type="log", yaxis_title="rank of the correct item (1 = best)",
                      boxmode="group" if len(runs) > 1 else "overlay", height=420, showlegend=len(runs) > 1)
    if n_items:
        fig.add_hline(y=n_items / 2, line_dash="dot", annotation_text="random (median)", line_color="gray")
    return fig


def share_bars(shares: pd.DataFrame, title: str = "Users whose target rank improves") -> go.Figure:
    """`shares`: columns step (e.g. 'L0 → L0+L1'), share (0..1) and optionally run."""
    fig = go.Figure()
    runs = shares["run"].unique() if "run" in shares else [None]
    for run in runs:
        s = shares if run is None else shares[shares["run"] == run]
        fig.add_bar(name=safe(run) if run is not None else "share", x=[safe(x) for x in s["step"]], y=s["share"],
                    text=[f"{v:.0%}" for v in s["share"]], textposition="outside")
    fig.update_layout(**LAYOUT, title=title, yaxis_tickformat=".0%", yaxis_range=[0, 1.1], height=340,
                      barmode="group", showlegend=len(runs) > 1)
    return fig


def attention_heatmap(
    pattern: np.ndarray, labels: list[str], gaps: np.ndarray | None = None, title: str = ""
) -> go.Figure:
    """One head's attention: `pattern` [query, key] (rows sum to ≤ 1), `labels` one title per position,
    `gaps` [query, key] time from key to query in seconds. Future keys are blank."""
    n = len(labels)
    ticks = [f"{i}· {safe(t, 38)}" for i, t in enumerate(labels)]  # position prefix keeps repeated titles apart
    z = np.where(np.tril(np.ones((n, n), dtype=bool)), np.round(pattern, 3), np.nan)
    hover = "query %{y}<br>key %{x}<br>weight %{z:.3f}"
    custom = None
    if gaps is not None:
        custom = np.vectorize(format_gap)(gaps)
        hover += "<br>time gap %{customdata}"
    zmax = max(0.05, float(np.nanmax(z))) if n else 1.0  # scaled to this head: diffuse patterns stay visible
    fig = go.Figure(go.Heatmap(z=z, x=ticks, y=ticks, customdata=custom, colorscale="Blues", zmin=0, zmax=zmax,
                               hovertemplate=hover + "<extra></extra>", hoverongaps=False, colorbar=dict(len=0.6)))
    size = min(900, 260 + 14 * n)
    fig.update_layout(**{**LAYOUT, "margin": dict(l=10, r=10, t=40, b=10)}, title=title, height=size, width=size + 80)
    fig.update_yaxes(autorange="reversed", tickfont_size=9, automargin=True, title="query (predicting the next item)")
    fig.update_xaxes(tickfont_size=9, tickangle=-60, automargin=True, title="key (attended item)")
    return fig


def head_score_bars(scores: pd.DataFrame, columns: list[str], title: str = "Head scores") -> go.Figure:
    """`scores`: one row per head (index) → grouped bars, one group per head, one bar per score column."""
    fig = go.Figure()
    for c in columns:
        if c in scores:
            fig.add_bar(name=c, x=[safe(h) for h in scores.index], y=scores[c].round(3))
    fig.update_layout(**LAYOUT, title=title, barmode="group", height=360, yaxis_range=[-1.05, 1.05])
    return fig


def composition_heatmap(comp: pd.DataFrame, title: str = "Composition (score − random baseline)") -> go.Figure:
    """`comp`: kind, source, target, excess → one heatmap, columns = target head × kind."""
    wide = comp.assign(col=comp["target"] + " " + comp["kind"]).pivot(index="source", columns="col", values="excess")
    fig = go.Figure(go.Heatmap(z=wide.to_numpy().round(3), x=list(wide.columns), y=list(wide.index), colorscale="RdBu",
                               zmid=0, hovertemplate="%{y} → %{x}<br>excess %{z:.3f}<extra></extra>"))
    fig.update_layout(**LAYOUT, title=title, height=200 + 30 * len(wide), xaxis_title="reading head and kind",
                      yaxis_title="writing head")
    return fig


def depth_lines(table: pd.DataFrame, metric: str = "NDCG@10", title: str = "") -> go.Figure:
    """`table`: columns run, layers, protocol, metric → one line per protocol over depth."""
    fig = go.Figure()
    for protocol, g in table.groupby("protocol", sort=False):
        g = g.sort_values("layers")
        fig.add_scatter(x=g["layers"], y=g[metric].round(4), mode="lines+markers", name=safe(protocol),
                        text=[safe(r) for r in g["run"]], hovertemplate="%{text}<br>%{y:.4f}<extra></extra>")
    fig.update_layout(**LAYOUT, title=title or f"{metric} by depth", xaxis_title="attention layers",
                      yaxis_title=metric, xaxis_dtick=1, height=360)
    return fig


def static_weight_lines(weights: pd.DataFrame, kind: str) -> go.Figure:
    """`weights` (heads.static_weights) of one kind → one line per head over its buckets."""
    w = weights[weights["kind"] == kind]
    fig = go.Figure()
    for head, g in w.groupby("head", sort=False):
        fig.add_scatter(x=[safe(x) for x in g["label"]], y=g["score"].round(3), mode="lines+markers", name=safe(head))
    what = "position distance" if kind == "distance" else "time gap"
    fig.update_layout(**LAYOUT, title=f"Static attention: learned score per {what} bucket", height=380,
                      xaxis_title=f"{what} between query and key", yaxis_title="score (softmax over visible keys)")
    return fig


def dag_layers(sources: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """Layer of each of `n` nodes in a DAG given by its edges: 0 for nodes without parents, else 1 + the deepest
    parent (the longest path from a source), so every edge points to a later layer."""
    layer = np.zeros(n, dtype=np.int64)
    for _ in range(n):  # relax along the edges; a DAG settles within n rounds (its longest path)
        new = layer.copy()
        np.maximum.at(new, targets, layer[sources] + 1)
        if (new == layer).all():
            break
        layer = new
    return layer


def dag_network(edges: pd.DataFrame, clusters: pd.DataFrame, title: str = "Cluster DAG") -> go.Figure:
    """`edges`: source, target, weight (+ optional source_name, target_name, transitions, reverse_transitions);
    `clusters`: cluster, name (+ optional top_titles, train_interactions) → a layered network: each node a cluster
    with an edge, placed by its layer (causes left of effects), arrows from cause to effect, width ∝ |weight|,
    blue for positive and red for negative weights; hover shows names, weights and transition counts."""
    fig = go.Figure()
    nodes = np.unique(np.r_[edges["source"].to_numpy(), edges["target"].to_numpy()]).astype(np.int64)
    index = {c: i for i, c in enumerate(nodes)}
    src = np.array([index[c] for c in edges["source"]], dtype=np.int64)
    dst = np.array([index[c] for c in edges["target"]], dtype=np.int64)
    layer = dag_layers(src, dst, len(nodes))
    y = np.zeros(len(nodes))
    for ell in np.unique(layer):
        members = np.flatnonzero(layer == ell)
        y[members] = np.linspace(0, 1, len(members) + 2)[1:-1] if len(members) > 1 else 0.5
    x = layer.astype(float)
    info = clusters.set_index("cluster")
    names = [safe(info["name"].get(c, c), 40) for c in nodes]
    w = edges["weight"].to_numpy(dtype=float)
    scale = 4.0 / max(np.abs(w).max(initial=0.0), 1e-12)
    for a, b, weight in zip(src, dst, w):
        fig.add_annotation(x=x[b], y=y[b], ax=x[a], ay=y[a], xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowsize=1, standoff=8, startstandoff=8,
                           arrowwidth=max(0.8, abs(weight) * scale), opacity=0.6,
                           arrowcolor="#2166ac" if weight > 0 else "#b2182b")
    def counts(col):
        return edges[col].to_numpy() if col in edges else np.full(len(edges), "")

    hover = [f"{names[a]} → {names[b]}<br>weight {weight:+.3f}<br>transitions {t} (reverse {r})"
             for a, b, weight, t, r in zip(src, dst, w, counts("transitions"), counts("reverse_transitions"))]
    fig.add_scatter(x=(x[src] + x[dst]) / 2, y=(y[src] + y[dst]) / 2, mode="markers", name="edges",
                    marker=dict(size=6, color=np.where(w > 0, "#2166ac", "#b2182b"), opacity=0.5),
                    text=hover, hovertemplate="%{text}<extra></extra>", showlegend=False)
    titles = [safe(info["top_titles"].get(c, ""), 120) if "top_titles" in info else "" for c in nodes]
    fig.add_scatter(x=x, y=y, mode="markers+text", text=names, textposition="top center", name="clusters",
                    customdata=titles, marker=dict(size=14, color="#4d4d4d"), showlegend=False,
                    hovertemplate="%{text}<br>%{customdata}<extra></extra>")
    fig.update_layout(**LAYOUT, title=safe(title), height=max(360, 40 * int(np.bincount(layer).max(initial=1)) + 120),
                      xaxis=dict(title="layer (longest path from a cause)", dtick=1, zeroline=False),
                      yaxis=dict(visible=False, range=[-0.05, 1.1]))
    return fig
