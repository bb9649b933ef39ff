"""DAG logits (circuits.causal.dag_logits, analyses.dag_logits): the term against a per-entry loop on a tiny known
graph, the one-pass grid ranks against the project's evaluator run once per weight, the learned weight against a
direct evaluation of the cross-entropy around it, and the command on planted data."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.errors import UserError

# a tiny known graph over 3 clusters: 0 → 1 (0.5), 1 → 2 (−0.25), 0 → 2 (2.0)
A = np.array([[0.0, 0.5, 2.0], [0.0, 0.0, -0.25], [0.0, 0.0, 0.0]])
CLUSTER = np.array([-1, 0, 0, 1, 2, 2, -1])  # vocabulary 0..6: padding, two items of 0, one of 1, two of 2, none


def test_term_is_the_clusters_entry_of_the_dag_for_every_pair():
    from circuits.causal.dag_logits import DagTerm

    last = torch.arange(7)
    for values in ("weight", "binary"):
        got = DagTerm(A, CLUSTER, values)(last)
        assert got.shape == (7, 7)
        for a in range(7):
            for j in range(7):
                c, d = CLUSTER[a], CLUSTER[j]
                want = 0.0 if c < 0 or d < 0 else (A[c, d] if values == "weight" else float(A[c, d] != 0))
                assert got[a, j].item() == want, (values, a, j)
    with pytest.raises(ValueError, match="unknown DAG values"):
        DagTerm(A, CLUSTER, "counts")


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """Planted data (6 clusters × 10 items, 300 users) and a 0-layer run on it."""
    from circuits.causal.planted import PlantedConfig, planted_log, write_planted
    from circuits.runs import load_run
    from tests.helpers import train_tiny

    root = tmp_path_factory.mktemp("dag-logits")
    data = write_planted(planted_log(PlantedConfig(n_clusters=6, n_users=300, min_length=5, max_length=12,
                                                   p_follow=0.7, p_stay=0.2)), root / "planted")
    return data, load_run(train_tiny(data, root / "L0", 0))


def planted_term(run):
    from circuits.causal.dag_logits import DagTerm
    from circuits.causal.planted import planted_dag_of

    ds = run.dataset()
    items = pd.read_csv(run.data_source() + "/items.tsv", sep="\t")
    by_id = dict(zip(items["item_id"], items["cluster"]))
    cluster = np.array([-1] + [by_id[i] for i in ds.item_ids[1:]])
    return DagTerm(planted_dag_of(run.data_source()).astype(float), cluster), ds


@pytest.mark.parametrize("policy", ["excluded", "included"])
def test_grid_ranks_equal_the_evaluator_once_per_weight(planted_run, policy):
    from circuits.causal.dag_logits import weight_ranks, with_dag
    from circuits.scoring.baselines import baseline_scorer
    from circuits.scoring.evaluator import model_scorer
    from circuits.scoring.metrics import split_ranks

    _, run = planted_run
    term, ds = planted_term(run)
    split = ds.eval_split("test", run.model.cfg.n_ctx)
    weights = (0.0, 0.3, -1.0, 10.0)
    for scorer in (baseline_scorer("markov", ds), model_scorer(run.model, split)):
        got = weight_ranks(scorer, term, split, weights, policy, batch_size=64)
        for i, w in enumerate(weights):
            want = split_ranks(with_dag(scorer, term, w), split, ds.d_vocab, n_sampled=0)[f"full/{policy}"]
            np.testing.assert_array_equal(got[i], want)
        assert (got[2] != got[0]).any()  # the weights do move ranks


def test_learned_weight_minimises_the_training_cross_entropy(planted_run):
    from circuits.causal.dag_logits import fit_dag_weight

    _, run = planted_run
    term, ds = planted_term(run)
    model = run.model
    fit = fit_dag_weight(model, ds, term, windows=100, seed=3)

    # the same windows, the loss computed the plain way: every position's full logits, cross-entropy
    rows, backs, lengths = ds.train_window_rows(model.cfg.n_ctx, "all")
    pick = np.sort(np.random.default_rng(3).choice(len(rows), size=min(100, len(rows)), replace=False))
    x, y, _ = (torch.from_numpy(a) for a in ds.train_batch(rows[pick], int(lengths[pick].max()), backs[pick]))
    with torch.no_grad():
        logits = model(x).double()
    logits[..., 0] = float("-inf")
    dag = term(x.reshape(-1)).reshape(*x.shape, -1)
    real = y != 0

    def loss(w):
        return torch.nn.functional.cross_entropy((logits + w * dag)[real], y[real]).item()

    assert fit["targets"] == int(real.sum())
    assert fit["loss_at_0"] == pytest.approx(loss(0.0), rel=1e-9)
    assert fit["loss"] == pytest.approx(loss(fit["weight"]), rel=1e-9)
    for eps in (1e-2, -1e-2, 0.3, -0.3):
        assert loss(fit["weight"]) < loss(fit["weight"] + eps)
    assert fit["loss"] <= fit["loss_at_0"] and fit["weight"] != 0


def test_command_scores_markov_and_the_model_with_and_without_dag_logits(planted_run, tmp_path, capsys):
    from analyses import causal, dag_logits

    data, run = planted_run
    dag = tmp_path / "dag"
    causal.main([str(data), "--labels", "cluster", "--iterations", "300", "--learning-rate", "0.01",
                 "--threshold", "0.05", "--quiet", "--out", str(dag)])
    assert dag_logits.main([str(dag), str(run.path)]) == 0
    table = pd.read_csv(dag / "dag_logits.csv")
    assert list(zip(table.system, table.weight_rule)) == [
        ("markov", "none"), ("markov", "chosen on validation"), ("model (0 layers)", "none"),
        ("model (0 layers)", "chosen on validation"), ("model (0 layers)", "learned")]
    summary = json.loads((dag / "dag_logits.json").read_text())
    assert summary["policy"] == run.config["train"]["resolved_seen_policy"]
    # without DAG logits: the run's own test figure and the Markov baseline's, as metrics.json has them
    metrics = json.loads((run.path / "metrics.json").read_text())
    protocol = summary["protocol"]
    assert table["test_NDCG@10"][2] == pytest.approx(metrics["model"]["test"][protocol]["NDCG@10"], abs=1e-6)
    assert table["test_NDCG@10"][0] == pytest.approx(metrics["baselines"]["markov"]["test"][protocol]["NDCG@10"],
                                                     abs=1e-6)
    grid = pd.read_csv(dag / "dag_logits_grid.csv")
    chosen = grid[grid.system == "markov"].sort_values("valid_NDCG@10", ascending=False, kind="stable").iloc[0]
    assert table["valid_NDCG@10"][1] == pytest.approx(chosen["valid_NDCG@10"])
    assert "learned" in capsys.readouterr().out

    # the planted truth, and the Markov baseline alone from the data
    out = tmp_path / "truth"
    assert dag_logits.main(["planted", str(data), "--out", str(out)]) == 0
    truth = json.loads((out / "dag_logits.json").read_text())
    planted_edges = len(json.loads((data / "ground_truth.json").read_text())["cluster_dag"])
    assert truth["dag"] == "planted" and truth["edges"] == planted_edges
    assert [r["system"] for r in truth["rows"]] == ["markov", "markov"]


def dag_of_other_data(tmp_path):
    """A DAG folder discovered on other planted data than `planted_run`'s."""
    from analyses import causal
    from circuits.synthetic import main as synthetic_main

    other = tmp_path / "other"
    synthetic_main(["--preset", "planted", "--out", str(other), "--n-clusters", "4", "--n-users", "50"])
    dag = tmp_path / "dag-other"
    causal.main([str(other), "--labels", "cluster", "--iterations", "50", "--quiet", "--out", str(dag)])
    return dag


def test_command_bad_input_is_one_error_and_writes_nothing(planted_run, tmp_path):
    from analyses import dag_logits

    data, run = planted_run
    dag = dag_of_other_data(tmp_path)
    before = sorted(p.name for p in dag.iterdir())
    with pytest.raises(UserError, match="discovered on other data"):
        dag_logits.main([str(dag), str(run.path)])
    assert sorted(p.name for p in dag.iterdir()) == before
    with pytest.raises(UserError, match="not a cluster DAG folder"):
        dag_logits.main([str(tmp_path), str(run.path), "--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="no planted cluster DAG"):
        dag_logits.main(["planted", "synthetic", "--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="--fit-windows"):
        dag_logits.main([str(dag), str(run.path), "--fit-windows", "0", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


# --- the report -------------------------------------------------------------------------------------------------

def test_dag_layers_are_the_longest_path_from_a_cause():
    from circuits.causal.dag import random_dag
    from circuits.plots import dag_layers

    rng = np.random.default_rng(0)
    for d in (1, 5, 12):
        dag = random_dag(d, 0.4, rng)
        src, dst = np.nonzero(dag)
        want = np.zeros(d, dtype=int)
        for _ in range(d):  # slow: the longest path into each node, by repeated passes over the edges one by one
            for a, b in zip(src, dst):
                want[b] = max(want[b], want[a] + 1)
        np.testing.assert_array_equal(dag_layers(src, dst, d), want)
        assert all(dag_layers(src, dst, d)[b] > dag_layers(src, dst, d)[a] for a, b in zip(src, dst))


HOSTILE = '<img src=x onerror=alert(1)>'


def test_causal_page_and_run_section_in_a_real_browser(planted_run, tmp_path):
    """A DAG whose cluster names are hostile labels: a page of its own and a section of the run's report, drawn in
    headless Chromium without errors, alerts, images or requests; the section carries the edges and DAG logits."""
    from analyses import causal, dag_logits
    from circuits.report.build import build_report
    from tests.browser import open_in_chromium, require_chromium

    data, run = planted_run
    items = pd.read_csv(data / "items.tsv", sep="\t")
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"item_id": items["item_id"], "label": [f"{HOSTILE} {c}" for c in items["cluster"]]}).to_csv(labels,
                                                                                                        index=False)
    dag = tmp_path / "dag"
    causal.main([str(data), "--labels", str(labels), "--iterations", "300", "--learning-rate", "0.01",
                 "--threshold", "0.05", "--quiet", "--out", str(dag)])
    edges = pd.read_csv(dag / "dag_edges.csv", keep_default_na=False)
    assert len(edges) > 0 and edges.source_name.str.contains("onerror").all()
    page = build_report([], tmp_path / "dag.html", causal=dag, progress=False)
    html = page.read_text()
    assert 'id="causal"' in html and "DAG logits" not in html and HOSTILE not in html
    dag_logits.main([str(dag), str(run.path)])
    report = build_report([run.path], tmp_path / "run.html", causal=dag, progress=False)
    html = report.read_text()
    assert html.index('id="causal"') > html.index("Rank by component") and "DAG logits" in html
    assert f"{edges.weight[0]:+.3f}" in html and HOSTILE not in html
    require_chromium()
    for path in (page, report):
        seen = open_in_chromium(path, tmp_path / f"browser-{path.stem}")
        assert seen["errors"] == [] and seen["alerts"] == [] and seen["images"] == 0 and seen["requests"] == []
        assert seen["figures"] > 0 and seen["drawn"] == seen["figures"]


def test_report_with_a_dag_refuses_mismatches(planted_run, tmp_path):
    from circuits.report.build import build_report

    data, run = planted_run
    dag = dag_of_other_data(tmp_path)
    with pytest.raises(UserError, match="discovered on other data"):
        build_report([run.path], tmp_path / "a.html", causal=dag, progress=False)
    with pytest.raises(UserError, match="one run directory"):
        build_report([run.path, run.path], tmp_path / "a.html", causal=dag, progress=False)
    with pytest.raises(UserError, match="not both"):
        build_report([], tmp_path / "a.html", causal=dag, sweep=tmp_path, progress=False)
    with pytest.raises(UserError, match="not a cluster DAG folder"):
        build_report([], tmp_path / "a.html", causal=tmp_path, progress=False)
    assert not (tmp_path / "a.html").exists()


def test_dag_network_draws_every_edge_from_cause_to_effect_with_escaped_names():
    from circuits.plots import dag_network

    edges = pd.DataFrame({"source": [0, 0, 2], "target": [2, 3, 3], "weight": [0.5, -0.2, 1.0],
                          "transitions": [7, 1, 3], "reverse_transitions": [0, 4, 2]})
    clusters = pd.DataFrame({"cluster": [0, 1, 2, 3], "name": ["<b>a</b>", "b", "c", "d"],
                             "top_titles": ["t0", "t1", "t2", "t3"]})
    fig = dag_network(edges, clusters)
    nodes = fig.data[-1]
    assert list(nodes.text) == ["&lt;b&gt;a&lt;/b&gt;", "c", "d"]  # cluster 1 has no edge: not drawn
    pos = {name: (x, y) for name, x, y in zip(nodes.text, nodes.x, nodes.y)}
    arrows = [(a.ax, a.ay, a.x, a.y, a.arrowcolor) for a in fig.layout.annotations]
    want = [(pos[s] + pos[t] + (colour,)) for s, t, colour in
            (("&lt;b&gt;a&lt;/b&gt;", "c", "#2166ac"), ("&lt;b&gt;a&lt;/b&gt;", "d", "#b2182b"), ("c", "d", "#2166ac"))]
    assert arrows == want
    assert [x for x in nodes.x] == [0.0, 1.0, 2.0]  # a → c → d: layers 0, 1, 2
    assert "transitions 1 (reverse 4)" in fig.data[0].text[1]
