"""Causal discovery over clusters (circuits.causal, analyses.causal): GOLEM's objective against the paper's
equations in numpy, recovery of tiny known linear-Gaussian graphs, thresholding and acyclicity against slow
references, the user × cluster matrix against a per-user loop, k-means against brute-force assignment, and
planted cluster DAGs recovered clearly better than their control."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from circuits.errors import UserError

if importlib.util.find_spec("castle") is None and os.environ.get("CIRCUITS_REQUIRE_CAUSAL"):  # CI sets it
    pytest.fail("gcastle is required here (CIRCUITS_REQUIRE_CAUSAL) but not installed", pytrace=False)
castle = pytest.importorskip("castle", reason="GOLEM needs gcastle: pip install -e '.[causal]'")


def castle_file(relative: str):
    """A module of gcastle loaded from its file (as circuits.causal.golem does: no package __init__)."""
    path = Path(importlib.util.find_spec("castle").submodule_search_locations[0]) / relative
    spec = importlib.util.spec_from_file_location(f"test_castle_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paper_score(B, X, lambda_1, lambda_2, equal_variances):
    """The GOLEM score of Ng, Ghassami & Zhang (2020), eqs. (4)-(6), in numpy/scipy: likelihood + λ₁‖B‖₁ + λ₂ h(B)."""
    from scipy.linalg import expm

    d = B.shape[0]
    R = X - X @ B
    if equal_variances:
        likelihood = d / 2 * np.log((R**2).sum())
    else:
        likelihood = 0.5 * np.log((R**2).sum(0)).sum()
    likelihood -= np.log(abs(np.linalg.det(np.eye(d) - B)))
    return likelihood + lambda_1 * np.abs(B).sum() + lambda_2 * (np.trace(expm(B * B)) - d)


def linear_gaussian(d, n, seed, edge_prob=0.3, noise_scales=None, mean_shift=3.0):
    """(X [n, d], true DAG): X = X W + E with weights ±[0.5, 2] on a random DAG, E Gaussian; columns offset by
    `mean_shift` (so that a fit without centring goes wrong)."""
    from circuits.causal.dag import random_dag

    rng = np.random.default_rng(seed)
    dag = random_dag(d, edge_prob, rng)
    W = dag * rng.uniform(0.5, 2.0, (d, d)) * rng.choice([-1.0, 1.0], (d, d))
    scales = np.ones(d) if noise_scales is None else noise_scales(rng, d)
    E = rng.normal(size=(n, d)) * scales
    X = E @ np.linalg.inv(np.eye(d) - W) + mean_shift
    return X, dag


# --- GOLEM: objective ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("equal_variances", [True, False])
def test_gcastle_objective_is_the_papers_score(equal_variances):
    """gcastle's GolemModel score (on B with its diagonal zeroed) equals eqs. (4)-(6) computed in numpy."""
    from circuits.causal.golem import golem_score

    rng = np.random.default_rng(1)
    d, n = 5, 60
    X = rng.normal(size=(n, d))
    B = rng.normal(0, 0.3, (d, d))
    got = golem_score(B, X, 0.02, 5.0, equal_variances)
    np.fill_diagonal(B, 0.0)  # the model ignores the diagonal
    assert got["score"] == pytest.approx(paper_score(B, X, 0.02, 5.0, equal_variances), rel=1e-10)
    assert got["h"] == pytest.approx(paper_score(B, X, 0.0, 1.0, equal_variances)
                                     - paper_score(B, X, 0.0, 0.0, equal_variances), rel=1e-10)


@pytest.mark.parametrize("equal_variances", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
def test_gram_root_scores_like_the_centred_data_up_to_a_constant(equal_variances, sparse):
    """The fit runs on R [d, d] with RᵀR = XcᵀXc / n: the score on the centred X is the score on R plus d/2·log n, for
    every B (so the same minimiser and gradients); a scipy.sparse X gives the same R."""
    import scipy.sparse as sp

    from circuits.causal.golem import golem_score, prepared_data

    rng = np.random.default_rng(2)
    n, d = 300, 6
    X = (rng.random((n, d)) < 0.3).astype(float) if sparse else rng.normal(size=(n, d)) + 2.0
    R = prepared_data(sp.csr_matrix(X) if sparse else X, "center")
    assert R.shape == (d, d)
    Xc = X - X.mean(0)
    for _ in range(3):
        B = rng.normal(0, 0.3, (d, d))
        np.fill_diagonal(B, 0.0)
        on_x = golem_score(B, Xc, 0.01, 2.0, equal_variances)["score"]
        on_r = golem_score(B, R, 0.01, 2.0, equal_variances)["score"]
        assert on_x - on_r == pytest.approx(d / 2 * np.log(n), abs=1e-8)


def test_constant_columns_are_refused():
    from circuits.causal.golem import prepared_data

    X = np.random.default_rng(0).normal(size=(50, 3))
    X[:, 1] = 4.0
    with pytest.raises(UserError, match="without variance"):
        prepared_data(X)


# --- GOLEM: recovery ------------------------------------------------------------------------------------------

FAST_GOLEM = {"learning_rate": 1e-2, "iterations": 3000}


@pytest.mark.parametrize("seed", [0, 1])
def test_golem_ev_recovers_small_equal_variance_graphs(seed):
    """7 nodes, 2,000 samples, equal noise variances, columns offset from zero: GOLEM-EV finds the graph."""
    from circuits.causal.golem import GolemConfig, fit_golem
    from circuits.causal.metrics import dag_metrics

    X, dag = linear_gaussian(7, 2000, seed)
    assert dag.sum() >= 4
    r = fit_golem(X, GolemConfig(variant="ev", **FAST_GOLEM), progress=False)
    m = dag_metrics(r.dag, dag)
    assert m["shd"] <= 1, m
    assert r.iterations == {"ev": 3000} and r.stopped == "iterations"
    assert r.history[-1]["iteration"] == 3000 and r.history[-1]["h"] < 1e-2


def test_golem_nv_warm_start_recovers_a_non_equal_variance_graph():
    """Noise scales in [0.5, 1.5]: GOLEM-NV started from GOLEM-EV's solution (the paper's recipe) finds the graph."""
    from circuits.causal.golem import GolemConfig, fit_golem
    from circuits.causal.metrics import dag_metrics

    X, dag = linear_gaussian(6, 2000, 3, noise_scales=lambda rng, d: rng.uniform(0.5, 1.5, d))
    r = fit_golem(X, GolemConfig(variant="nv-warm", **FAST_GOLEM), progress=False)
    assert dag_metrics(r.dag, dag)["shd"] <= 1
    assert list(r.iterations) == ["ev", "nv"]
    assert [h["stage"] for h in r.history][0] == "ev" and r.history[-1]["stage"] == "nv"


def test_time_budget_stops_the_fit():
    from circuits.causal.golem import GolemConfig, fit_golem, should_stop, stage_budget

    assert stage_budget(0.0, 2, 0, 5.0) == np.inf
    assert stage_budget(1.0, 2, 0, 0.0) == 30.0 and stage_budget(1.0, 2, 1, 20.0) == 40.0
    assert should_stop(10, 10, 0.0, 1.0) == "iterations" and should_stop(3, 10, 2.0, 1.0) == "time"
    assert should_stop(3, 10, 0.5, 1.0) is None
    X, _ = linear_gaussian(5, 200, 0)
    r = fit_golem(X, GolemConfig(iterations=10**7, max_minutes=0.5 / 60), progress=False)
    assert r.stopped == "time" and 0 < r.iterations["ev"] < 10**7 and r.seconds < 5


def test_convergence_stops_a_fit_where_more_steps_change_nothing():
    from circuits.causal.golem import GolemConfig, fit_golem, should_stop

    assert should_stop(2000, 10**5, 0.0, np.inf, score=9.99999, previous=10.0, tol=1e-5) == "converged"
    assert should_stop(2000, 10**5, 0.0, np.inf, score=9.9, previous=10.0, tol=1e-5) is None
    assert should_stop(2000, 10**5, 0.0, np.inf, score=10.0, previous=10.0, tol=0.0) is None
    X, dag = linear_gaussian(5, 500, 1)
    full = fit_golem(X, GolemConfig(iterations=30_000, tol=0.0, learning_rate=0.01), progress=False)
    early = fit_golem(X, GolemConfig(iterations=30_000, tol=1e-6, learning_rate=0.01), progress=False)
    assert full.stopped == "iterations" and full.iterations["ev"] == 30_000
    assert early.stopped == "converged" and early.iterations["ev"] < 30_000 and early.iterations["ev"] % 1000 == 0
    np.testing.assert_array_equal(early.dag, full.dag)
    np.testing.assert_allclose(early.B, full.B, atol=0.02)
    assert early.history[-1]["iteration"] == early.iterations["ev"]


# --- DAG utilities and metrics --------------------------------------------------------------------------------

def test_is_dag_and_topological_order_against_networkx():
    import networkx as nx

    from circuits.causal.dag import is_dag, topological_order

    rng = np.random.default_rng(0)
    for _ in range(200):
        d = int(rng.integers(1, 9))
        A = (rng.random((d, d)) < rng.uniform(0.05, 0.4)) * rng.normal(size=(d, d))
        want = nx.is_directed_acyclic_graph(nx.DiGraph(A))
        assert is_dag(A) == want
        order = topological_order(A)
        if want:
            place = np.empty(d, dtype=int)
            place[order] = np.arange(d)
            src, dst = np.nonzero(A)
            assert sorted(order.tolist()) == list(range(d)) and (place[src] < place[dst]).all()
        else:
            assert order is None


def gcastle_postprocess(B, threshold):
    """gcastle's `postprocess` (threshold, then remove edges one by one, weakest first, until a DAG), with networkx."""
    import networkx as nx

    B = np.where(np.abs(B) > threshold, B, 0.0)
    for i, j in sorted(zip(*np.nonzero(B)), key=lambda e: abs(B[e])):
        if nx.is_directed_acyclic_graph(nx.DiGraph(B)):
            break
        B[i, j] = 0.0
    return B


def test_threshold_to_dag_matches_edge_by_edge_removal():
    from circuits.causal.dag import is_dag, threshold_to_dag

    rng = np.random.default_rng(0)
    cyclic = 0
    for _ in range(100):
        d = int(rng.integers(2, 10))
        B = rng.normal(0, 0.6, (d, d))
        np.fill_diagonal(B, 0.0)
        W, cut = threshold_to_dag(B, 0.3)
        np.testing.assert_array_equal(W, gcastle_postprocess(B, 0.3))
        assert is_dag(W)
        cyclic += cut > 0
        assert (cut > 0) == (not is_dag(np.where(np.abs(B) > 0.3, B, 0.0)))
    assert cyclic > 20  # the acyclicity step was exercised


def test_dag_metrics_against_gcastle_metricsdag_and_by_hand():
    from circuits.causal.dag import random_dag
    from circuits.causal.metrics import dag_metrics

    MetricsDAG = castle_file("metrics/evaluation.py").MetricsDAG
    rng = np.random.default_rng(0)
    for _ in range(40):
        d = int(rng.integers(3, 9))
        true, est = random_dag(d, 0.4, rng), random_dag(d, 0.4, rng)
        if not true.any() or not est.any():
            continue
        want = MetricsDAG(est.astype(int), true.astype(int)).metrics
        got = dag_metrics(est, true)
        assert got["shd"] == want["shd"]
        assert round(got["tpr"], 4) == want["tpr"] and round(got["fdr"], 4) == want["fdr"]
    # 0 → 1 correct, 2 → 1 reversed (truth 1 → 2), 0 → 3 extra; truth's 2 → 3 missing
    true = np.zeros((4, 4), bool)
    true[0, 1] = true[1, 2] = true[2, 3] = True
    est = np.zeros((4, 4), bool)
    est[0, 1] = est[2, 1] = est[0, 3] = True
    m = dag_metrics(est, true)
    assert (m["shd"], m["tpr"], m["fdr"], m["reversed"], m["false"]) == (3, 1 / 3, 2 / 3, 1, 1)
    assert dag_metrics(np.zeros((4, 4), bool), true) == dict(m, shd=3, tpr=0.0, fdr=0.0, found_edges=0, correct=0,
                                                            reversed=0, false=0, missing_pairs=3, extra_pairs=0)


# --- the user × cluster matrix ---------------------------------------------------------------------------------

def tiny_dataset():
    """Users of lengths 1, 2, 3, 5 and 6 over items a..f (titles 'title a', …)."""
    from circuits.data.sequences import build_dataset

    seqs = {"u1": "a", "u2": "ab", "u3": "cca", "u4": "abcde", "u5": "fafbfc"}
    rows = [(u, it, t) for u, s in seqs.items() for t, it in enumerate(s)]
    return build_dataset(pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": float}),
                         {i: f"title {i}" for i in "abcdef"}, "tiny")


def test_user_cluster_matrix_and_transitions_against_a_per_user_loop():
    from circuits.causal.matrix import cluster_transitions, user_cluster_matrix

    ds = tiny_dataset()
    item_cluster = np.array([-1, 0, 1, 0, 2, -1, 1])  # pad, a, b, c, d, e (none), f
    k = 3
    counts = np.zeros((ds.n_users, k))
    arrivals = np.zeros((ds.n_users, k))
    trans = np.zeros((k, k), dtype=np.int64)
    for u, seq in enumerate(ds.train_sequences()):  # the obvious loop over the training parts
        cl = [item_cluster[i] for i in seq]
        for c in cl:
            if c >= 0:
                counts[u, c] += 1
        for a, b in zip(cl[:-1], cl[1:]):
            if a >= 0 and b >= 0:
                trans[a, b] += 1
            if b >= 0 and a != b:
                arrivals[u, b] += 1
    np.testing.assert_array_equal(user_cluster_matrix(ds, item_cluster, k, "counts").toarray(), counts)
    np.testing.assert_array_equal(user_cluster_matrix(ds, item_cluster, k, "binary").toarray(), counts > 0)
    np.testing.assert_array_equal(user_cluster_matrix(ds, item_cluster, k, "transitions").toarray(), arrivals)
    np.testing.assert_array_equal(cluster_transitions(ds, item_cluster, k).toarray(), trans)
    assert arrivals[4].tolist() == [1, 1, 0]  # u5: f a f b = clusters 1 0 1 1: into 0, into 1, then a stay
    # training parts: u1 a | u2 a b | u3 c | u4 a b c | u5 f a f b (the last two of users with ≥ 3 held out)
    assert counts.sum() == 11 and counts[4].tolist() == [1, 3, 0]


# --- clusters --------------------------------------------------------------------------------------------------

def test_kmeans_assigns_every_row_to_its_nearest_centroid_and_finds_separated_blobs():
    from circuits.causal.clusters import kmeans_assign

    rng = np.random.default_rng(0)
    centres = 20 * np.eye(5)  # blobs far apart: the best of 5 starts finds them
    blob = np.repeat(np.arange(5), 30)
    x = (centres[blob] + rng.normal(0, 0.5, (150, 5))).astype(np.float32)
    labels, centroids = kmeans_assign(x, 5, seed=0, fit_rows=np.arange(0, 150, 2), n_redo=5)
    brute = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)  # every row against every centroid
    np.testing.assert_array_equal(labels, brute)
    assert len({(b, lab) for b, lab in zip(blob, labels)}) == 5  # one label per blob, and blobs apart
    again, _ = kmeans_assign(x, 5, seed=0, fit_rows=np.arange(0, 150, 2), n_redo=5)
    np.testing.assert_array_equal(labels, again)


def test_kmeans_clusters_cap_k_renumber_by_reads_and_name_by_top_titles():
    from circuits.causal.clusters import kmeans_clusters

    ds = tiny_dataset()  # training counts: a 4, b 3, c 2, f 2, d 0, e 0
    counts = ds.train_counts()
    vectors = np.zeros((ds.d_vocab, 2), np.float32)
    index = {i: j for j, i in enumerate(ds.item_ids)}
    for item, v in {"a": (0, 0), "b": (0, 0.1), "c": (10, 0), "d": (10, 0.1), "e": (0, 0.2), "f": (10, 0.2)}.items():
        vectors[index[item]] = v
    capped = kmeans_clusters(ds, vectors, k=100, seed=0)
    assert capped.k == 4 and capped.info["fitted_on_items"] == 4  # capped by the items read in training
    cl = kmeans_clusters(ds, vectors, k=2, seed=0)
    assert cl.k == 2
    got = {item: int(cl.item_cluster[index[item]]) for item in "abcdef"}
    assert got == {"a": 0, "b": 0, "e": 0, "c": 1, "d": 1, "f": 1} and cl.item_cluster[0] == -1
    # brute force: per cluster, titles by training count (ties by item index), the top three joined
    for c, row in cl.names.set_index("cluster").iterrows():
        members = [i for i in range(1, ds.d_vocab) if cl.item_cluster[i] == c]
        members.sort(key=lambda i: (-counts[i], i))
        assert row["top_titles"] == " · ".join(ds.titles[i] for i in members[:3]) == row["name"]
        assert row["train_interactions"] == counts[members].sum() and row["items"] == len(members)
    assert cl.names["train_interactions"].tolist() == [7, 4]  # cluster 0 = the most read


def test_label_clusters_and_first_labels():
    from circuits.causal.clusters import first_label, label_clusters

    assert first_label("Animation, Children's, Comedy") == "Animation" and first_label("A|B") == "A"
    assert first_label(None) == "" and first_label(float("nan")) == ""
    ds = tiny_dataset()
    cl = label_clusters(ds, {"a": "x", "b": "y", "c": "x", "f": "y", "d": ""})
    index = {i: j for j, i in enumerate(ds.item_ids)}
    assert cl.names["name"].tolist() == ["x", "y"]  # x: a 4 + c 2 = 6 reads, y: b 3 + f 2 = 5
    assert [int(cl.item_cluster[index[i]]) for i in "abcdef"] == [0, 1, 0, -1, -1, 1]
    with pytest.raises(UserError, match="no item"):
        label_clusters(ds, {"zzz": "x"})


# --- planted truth ------------------------------------------------------------------------------------------------

PLANTED = {"n_clusters": 20, "n_users": 2000, "min_length": 5, "max_length": 15, "p_follow": 0.7, "p_stay": 0.2}


def test_planted_controls_keep_the_data_but_not_the_structure():
    from circuits.causal.planted import PlantedConfig, planted_log

    base = planted_log(PlantedConfig(**PLANTED))
    shuffled = planted_log(PlantedConfig(**PLANTED, order="shuffled"))
    independent = planted_log(PlantedConfig(**PLANTED, order="independent"))
    np.testing.assert_array_equal(base.dag, shuffled.dag)
    assert base.dag.sum() >= 20
    for control in (shuffled, independent):  # the same users, lengths, timestamps and cluster frequencies
        np.testing.assert_array_equal(control.log["user_id"], base.log["user_id"])
        np.testing.assert_array_equal(control.log["timestamp"], base.log["timestamp"])
        assert (control.log["item_id"].str[:3].value_counts().sort_index()
                == base.log["item_id"].str[:3].value_counts().sort_index()).all()
    per_user = base.log.assign(c=base.log["item_id"].str[:3]).groupby("user_id")["c"].apply(sorted)
    assert per_user.equals(shuffled.log.assign(c=shuffled.log["item_id"].str[:3]).groupby("user_id")["c"].apply(sorted))
    assert not base.log["item_id"].equals(shuffled.log["item_id"])
    # in the planted walk, consecutive clusters follow DAG edges far more often than in the controls
    def edge_share(data):
        ds = data.dataset()
        ic = data.item_cluster(ds)
        prev, nxt = ds.train_transitions()
        a, b = ic[prev], ic[nxt]
        return data.dag[a[a != b], b[a != b]].mean()
    assert edge_share(base) > 0.4 > 0.15 > max(edge_share(shuffled), edge_share(independent))


def test_golem_recovers_planted_cluster_dag_clearly_better_than_the_control():
    """20 planted clusters, 2,000 users, binary user × cluster matrix, GOLEM-EV (threshold 0.1: weights between
    binary columns are far below the paper's Gaussian 0.3): most planted edges found with few false ones; on the
    independent control (same cluster frequencies and lengths) hardly anything."""
    from circuits.causal.discovery import discover
    from circuits.causal.golem import GolemConfig
    from circuits.causal.metrics import dag_metrics
    from circuits.causal.planted import PlantedConfig, planted_log

    cfg = GolemConfig(threshold=0.1, **FAST_GOLEM)
    found = {}
    for order in ("planted", "independent"):
        data = planted_log(PlantedConfig(**PLANTED, order=order))
        ds = data.dataset()
        from circuits.causal.clusters import label_clusters

        truth = dict(zip(data.items["item_id"], data.items["cluster"].astype(str)))
        cl = label_clusters(ds, truth)
        dag = discover(ds, cl, golem=cfg, progress=False)
        planted_id = cl.names["name"].astype(int).to_numpy()
        est = np.zeros_like(data.dag)
        src, dst = np.nonzero(dag.adjacency)
        est[planted_id[src], planted_id[dst]] = True
        found[order] = dag_metrics(est, data.dag)
    p, c = found["planted"], found["independent"]
    assert p["tpr"] >= 0.5 and p["fdr"] <= 0.2, p
    assert c["tpr"] <= 0.1 and p["shd"] <= 0.6 * c["shd"], (p, c)


# --- the command ---------------------------------------------------------------------------------------------------

def planted_folder(tmp_path, **kw):
    from circuits.causal.planted import PlantedConfig, planted_log, write_planted

    cfg = PlantedConfig(**{"n_clusters": 6, "n_users": 400, "min_length": 4, "max_length": 8, **kw})
    return write_planted(planted_log(cfg), tmp_path / "planted")


def test_command_writes_the_dag_tables_and_summary(tmp_path, capsys):
    import json

    from analyses import causal
    from circuits.causal.discovery import OUTPUT_FILES, load_cluster_dag

    data = planted_folder(tmp_path)
    out = tmp_path / "out"
    assert causal.main([str(data), "--labels", "cluster", "--iterations", "300", "--learning-rate", "0.01",
                        "--threshold", "0.05", "--quiet", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    edges = pd.read_csv(out / "dag_edges.csv", keep_default_na=False, dtype={"source_name": str, "target_name": str})
    assert list(edges.columns) == ["source", "target", "weight", "source_name", "target_name", "transitions",
                                   "reverse_transitions"]
    pd.testing.assert_frame_equal(edges, pd.read_parquet(out / "dag_edges.parquet"), check_dtype=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["planted"]["true_edges"] > 0 and summary["golem"]["iterations"] == {"ev": 300}
    adjacency, item_cluster, item_ids, table = load_cluster_dag(out)
    assert adjacency.shape == (6, 6) and (adjacency != 0).sum() == len(edges) == summary["golem"]["edges"]
    assert len(item_cluster) == len(item_ids) == 61 and len(table) == 6
    assert "planted DAG: SHD" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--labels", "no_such_column"], "no such column"),
    ([], "has no item vectors"),
    (["--vectors", "W_E"], "needs a run directory"),
    (["--data", "elsewhere"], "is for a run directory"),
    (["--labels", "cluster", "--variant", "xx"], "invalid choice"),
    (["--labels", "cluster", "--threshold", "-1"], "threshold"),
])
def test_command_bad_input_is_one_error_and_writes_nothing(tmp_path, argv, message):
    from analyses import causal

    data = planted_folder(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        causal.main([str(data), "--iterations", "10", "--quiet", "--out", str(out), *argv])
    assert not out.exists() or not any(out.iterdir())


def test_planted_preset_of_the_synthetic_command_writes_what_planted_log_makes(tmp_path, capsys):
    from dataclasses import asdict

    from circuits import synthetic
    from circuits.causal.planted import PlantedConfig, planted_dag_of, planted_log

    with pytest.raises(SystemExit):
        synthetic.main(["--preset", "planted", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "PlantedConfig" in help_text and "--n-clusters" in help_text and "--p-induction" not in help_text
    out = tmp_path / "p"
    assert synthetic.main(["--preset", "planted", "--out", str(out), "--n-clusters", "7", "--n-users", "90",
                           "--order", "shuffled", "--seed", "3"]) == 0
    cfg = PlantedConfig(n_clusters=7, n_users=90, order="shuffled", seed=3)
    want = planted_log(cfg)
    assert f"{len(want.log):,} interactions" in capsys.readouterr().out
    np.testing.assert_array_equal(planted_dag_of(out), want.dag)
    log = pd.read_csv(out / "interactions.tsv.gz", sep="\t")
    pd.testing.assert_frame_equal(log, want.log, check_dtype=False)
    import json

    assert json.loads((out / "ground_truth.json").read_text())["config"] == asdict(cfg)
    with pytest.raises(UserError, match="p_follow"):
        synthetic.main(["--preset", "planted", "--out", str(tmp_path / "x"), "--p-follow", "0.9"])
    assert not (tmp_path / "x").exists()


def test_every_golem_field_has_a_flag():
    from dataclasses import fields

    from analyses.causal import build_parser
    from circuits.causal.golem import GolemConfig
    from circuits.cli import config_from_args

    argv = ["data", "--variant", "nv", "--lambda-1", "0.5", "--lambda-2", "2", "--learning-rate", "0.1",
            "--iterations", "7", "--max-minutes", "3", "--threshold", "0.2", "--scale", "standardize",
            "--init-std", "0.01", "--seed", "4", "--device", "cuda", "--dtype", "float64", "--log-every", "9",
            "--tol", "0.001"]
    cfg = config_from_args(GolemConfig, build_parser().parse_args(argv))
    default = GolemConfig()
    assert all(getattr(cfg, f.name) != getattr(default, f.name) for f in fields(GolemConfig))
