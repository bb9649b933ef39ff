"""Build a report: one run → its full page; several runs → a comparison page. Written atomically."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from circuits import plots
from circuits.errors import UserError
from circuits.report import sections as S
from circuits.report.experiments import TestPass, causal_section, experiment_sections, sweep_sections
from circuits.report.page import Section, render


def run_report(run, ds=None, seq_ids: list[str] | None = None, top_pairs: int = 10, window: int = 30,
               min_count: int = 10, experiments: bool = False, progress: bool = True, eval_users: int | None = None,
               eval_seed: int = 0, causal: str | Path | None = None) -> str:
    """The HTML of one run's report (run card, ranks, pairs, heads, attention, decomposition; with
    `experiments`, also order sensitivity, translation vector and same-item attention; with `causal`, a cluster DAG
    folder of `python -m analyses.causal` on the run's data, its section). The rank section covers
    `eval_users` test users (a seeded sample, `eval_seed`; 0 = all; None = `sections.report_eval_users`).

    The test split goes through the model once (`last_position.read_split`) for the rank table and, when it
    covers every test user, for the experiments' intact and ablated user vectors too; each chosen user's history
    once (`sequence_cache`) for both its attention patterns and its decomposition."""
    from circuits.data.sequences import sample_eval_users
    from circuits.interp.decomposition import sequence_cache
    from circuits.interp.last_position import read_split
    from circuits.interp.ranks import ComponentRanks

    ds = ds or run.dataset()
    users = _check_users(ds, seq_ids) if seq_ids else None  # before any work: an unknown id is one error line
    dag = causal_section(causal) if causal is not None else None  # likewise a folder that is not a DAG
    steps = tqdm(total=6, desc=f"report {S.run_name(run)}", disable=not progress, leave=False)
    sections = [S.run_card(run)]
    steps.update()
    sample = sample_eval_users(ds, S.report_eval_users(ds, eval_users), eval_seed)
    test = ds.eval_split("test", run.model.cfg.n_ctx, users=sample)
    ranks = ComponentRanks(run.model, ds, test, exclude_seen=run.seen_policy == "excluded")
    shared = TestPass(run, ds, test) if experiments and sample is None else None
    read_split(run.model, test, [ranks, *(shared.readers if shared else [])])
    table = ranks.arrays().frame()
    sections.append(S.rank_section(run, table, ds.n_items, S.users_text(ds, table, eval_seed)))
    steps.update()
    users = users or S.representative_users(table)
    caches = {u: sequence_cache(run.model, ds, u) for u in users}
    sections.append(S.pairs_section(run, ds, top_pairs, min_count))
    steps.update()
    heads = S.heads_section(run, ds)
    if heads is not None:
        sections.append(heads)
    steps.update()
    if run.model.cfg.n_layers:
        sections.append(S.sequences_section(run, ds, users, window, caches))
    steps.update()
    sections.append(S.decomposition_section(run, ds, users, caches=caches))
    steps.update()
    if experiments:
        sections += experiment_sections(run, ds, shared)
    if dag is not None:
        sections.append(dag)
    steps.close()
    cfg = run.config["model"]
    return render(f"{S.run_name(run)}: {cfg['n_layers']}-layer attention-only model",
                  f"{run.config['data']['summary'].get('name', '')} · report built {_now()}", sections)


def comparison_report(runs: list, ds=None, seq_ids: list[str] | None = None, window: int = 30,
                      progress: bool = True, eval_users: int | None = None, eval_seed: int = 0) -> str:
    """The HTML of a comparison page: metrics by depth, rank by component side by side, attention per model
    (ranks of the same `eval_users` test users in every model, as in `run_report`)."""
    fingerprints = {r.config["data"]["fingerprint"] for r in runs}
    if len(fingerprints) > 1:
        raise UserError("the runs were trained on different data; a comparison page needs runs on the same data")
    ds = ds or runs[0].dataset()
    users = _check_users(ds, seq_ids) if seq_ids else None  # before any work: an unknown id is one error line
    names = [S.run_name(r) for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    tables = {}
    n_eval = S.report_eval_users(ds, eval_users)
    for r, name in tqdm(list(zip(runs, names)), desc="ranks", disable=not progress, leave=False):
        tables[name] = S.rank_table_for(r, ds, eval_users=n_eval, eval_seed=eval_seed)

    metrics = []
    for r, name in zip(runs, names):
        m = S.metrics_frame(r)
        m = m[m["system"] == "model"].drop(columns="system")
        metrics.append(m.assign(run=name, layers=r.model.cfg.n_layers, heads=r.model.cfg.n_heads,
                                attention=r.model.cfg.attention_label))
    metrics = pd.concat(metrics, ignore_index=True)
    card = Section("Metrics by model", anchor="metrics")
    card.text("Test split; full ranking first (pessimistic ties), sampled last and labelled. Baselines are on each "
              "run's own report.")
    card.table(metrics[["run", "layers", "heads", "attention", "protocol", "HR@10", "NDCG@10", "MRR@10"]])
    card.figure(plots.depth_lines(metrics[metrics["protocol"].str.startswith("full/")], title="Test NDCG@10 by depth"))

    ranks = Section("Rank by component, side by side", anchor="ranks")
    ranks.text(f"{S.GROUP_ORDER_NOTE} The same test users for every model: "
               f"{S.users_text(ds, next(iter(tables.values())), eval_seed)}.")
    q = pd.concat([S.rank_quantiles(t).assign(run=n) for n, t in tables.items()], ignore_index=True)
    ranks.figure(plots.rank_boxes(q, n_items=ds.n_items))
    gains = pd.concat([S.layer_gains(t).assign(run=n) for n, t in tables.items()], ignore_index=True)
    if len(gains):
        ranks.figure(plots.share_bars(gains))

    deepest = max(range(len(runs)), key=lambda i: runs[i].model.cfg.n_layers)
    users = users or S.representative_users(tables[names[deepest]])
    att = Section("Attention patterns per model", anchor="attention")
    att.text(f"The same test users for every model (the last {window} items). Hover for titles, weight and time gap.")
    for u in users:
        att.heading(f"user {u}")
        parts = []
        for r, name in zip(runs, names):
            if r.model.cfg.n_layers:
                part = Section(name).heading(name)
                for f in S.attention_figures(r, ds, u, window):
                    part.figure(f)
                parts.append(part)
        att.grid(parts)
    return render("Model comparison: " + ", ".join(names), f"{runs[0].config['data']['summary'].get('name', '')} · "
                  f"report built {_now()}", [card, ranks, att])


def sweep_report(folder: str | Path) -> str:
    """The HTML of a depth sweep's page (`python -m analyses.depth`): NDCG by depth, runs, learning curves."""
    secs = sweep_sections(folder)
    return render(f"Depth sweep: {Path(folder).name}", f"report built {_now()}", secs)


def causal_report(folder: str | Path) -> str:
    """The HTML of a cluster DAG folder's page (`python -m analyses.causal`)."""
    sec = causal_section(folder)
    return render(f"Cluster DAG: {Path(folder).name}", f"report built {_now()}", [sec])


def _check_same_data(run, folder: str | Path) -> None:
    """A DAG shown in a run's report must come from the run's data (the fingerprint in its summary.json)."""
    from circuits.causal.discovery import dag_fingerprint

    want = dag_fingerprint(folder)
    have = run.config["data"]["fingerprint"]
    if want is not None and want != have:
        raise UserError(f"the DAG in {folder} was discovered on other data (fingerprint {want}) than the run "
                        f"{run.path} ({have})")


def build_report(run_dirs: list[str | Path], out: str | Path | None = None, seq_ids: list[str] | None = None,
                 top_pairs: int = 10, window: int = 30, min_count: int = 10, experiments: bool = False,
                 progress: bool = True, sweep: str | Path | None = None, data: str | None = None,
                 items: str | None = None, eval_users: int | None = None, eval_seed: int = 0,
                 causal: str | Path | None = None) -> Path:
    """Load the runs, build the page (one run: its report; several: a comparison; `sweep`: a depth sweep
    folder's page; `causal` alone: a cluster DAG folder's page, with one run: a section of its report), write it
    to `out`. `data`/`items`: where the runs' data is, if not where they recorded it.
    `eval_users`, `eval_seed`: the rank section's test users (see `run_report`)."""
    from circuits.runs import load_run

    runs = [load_run(d) for d in run_dirs]
    ds = runs[0].dataset(data, items) if runs else None
    if causal is not None and len(runs) > 1:
        raise UserError("--causal goes with one run directory (a section of its report) or none (a page of its own)")
    if sweep is not None:
        if runs or causal is not None:
            raise UserError("give either run directories (or --causal FOLDER) or --sweep FOLDER, not both")
        page, default = sweep_report(sweep), f"reports/sweep-{Path(sweep).resolve().name}.html"
    elif not runs and causal is not None:
        page, default = causal_report(causal), f"reports/causal-{Path(causal).resolve().name}.html"
    elif not runs:
        raise UserError("give at least one run directory (or --sweep FOLDER, or --causal FOLDER)")
    elif len(runs) == 1:
        if causal is not None:
            _check_same_data(runs[0], causal)
        page = run_report(runs[0], ds, seq_ids=seq_ids, top_pairs=top_pairs, window=window, min_count=min_count,
                          experiments=experiments, progress=progress, eval_users=eval_users, eval_seed=eval_seed,
                          causal=causal)
        default = f"reports/{S.run_name(runs[0])}.html"
    else:
        page = comparison_report(runs, ds, seq_ids=seq_ids, window=window, progress=progress, eval_users=eval_users,
                                 eval_seed=eval_seed)
        default = "reports/compare-" + "-".join(S.run_name(r) for r in runs)[:120] + ".html"
    out = Path(out or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _check_users(ds, seq_ids: list[str]) -> list[str]:
    for u in seq_ids:
        ds.user_index(u)  # one-line error for an unknown id
    return list(seq_ids)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
