"""HTML reports: section builders against direct computations, escaping, and a real headless browser."""


import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from circuits.errors import UserError
from circuits.report import build_report
from circuits.report import sections as S
from circuits.report.page import Section, render, table_html
from circuits.runs import load_run
from tests.browser import open_in_chromium, require_chromium
from tests.helpers import tiny_journeys, train_tiny

HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "\"><svg onload=alert(3)>",
           "<b>bold</b> & <a href=https://example.com>link</a>"]


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    """0- and 2-layer runs on tiny journeys whose every title is hostile markup."""
    root = tmp_path_factory.mktemp("hostile")
    folder = tiny_journeys(root / "data", n_users=80, max_length=14)
    items = pd.read_csv(folder / "items.tsv", sep="\t")
    items["title"] = [f"{HOSTILE[i % len(HOSTILE)]} #{i}" for i in range(len(items))]
    items.to_csv(folder / "items.tsv", sep="\t", index=False)
    return {layers: train_tiny(folder, root / f"L{layers}", layers) for layers in (0, 2)}


def test_tables_escape_every_cell_and_header():
    html = table_html(pd.DataFrame({"<th>": [HOSTILE[0]], "n": [3], "x": [0.5]}))
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;th&gt;" in html
    assert "<td>3</td>" in html and "<td>0.5000</td>" in html


def test_page_inlines_plotly_once_and_fetches_nothing(hostile_runs, tmp_path):
    out = build_report([hostile_runs[2]], tmp_path / "r.html", progress=False)
    html = out.read_text()
    assert html.count(get_plotlyjs()[:200]) == 1
    assert html.count("Plotly.newPlot(") >= 5
    assert "<script src" not in html and "<link" not in html and "Content-Security-Policy" in html
    for bad in HOSTILE:
        assert bad not in html  # neither as markup nor inside a script's JSON
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    for title in ("Run card", "Rank by component", "Top document pairs", "Head scores", "Attention patterns",
                  "Decomposition of the chosen sequences"):
        assert f">{title}</h2>" in html


def test_rank_quantiles_and_layer_gains_against_direct_computation():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(50)]
    ranks = {c: rng.integers(1, 1000, 50) for c in ("L0", "L1", "L2", "L0+L1", "L0+L1+L2", "L0H0")}
    table = pd.DataFrame([{"user_id": u, "component": c, "rank": int(r[i])}
                          for c, r in ranks.items() for i, u in enumerate(users)])
    q = S.rank_quantiles(table).set_index("component")
    assert "L0H0" not in q.index
    assert q.loc["L1", "median"] == pytest.approx(np.quantile(ranks["L1"], 0.5))
    assert q.loc["L0+L1", "q95"] == pytest.approx(np.quantile(ranks["L0+L1"], 0.95))
    gains = S.layer_gains(table).set_index("step")["share"]
    assert list(gains.index) == ["L0 → L0+L1", "L0+L1 → L0+L1+L2"]
    assert gains.iloc[0] == pytest.approx(np.mean(ranks["L0+L1"] < ranks["L0"]))
    assert gains.iloc[1] == pytest.approx(np.mean(ranks["L0+L1+L2"] < ranks["L0+L1"]))
    picks = S.representative_users(table)
    change = np.log(ranks["L0+L1+L2"]) - np.log(ranks["L0"])
    assert picks[1] == users[int(np.argmin(change))] and picks[2] == users[int(np.argmax(change))]


def test_metrics_frame_puts_full_ranking_first_and_labels_sampled(hostile_runs):
    run = load_run(hostile_runs[2])
    t = S.metrics_frame(run)
    protocols = list(dict.fromkeys(t["protocol"]))
    assert protocols[0] == f"full/{run.seen_policy}" and protocols[-1].startswith("sampled-100 (SAMPLED")
    want = run.metrics["model"]["test"][f"full/{run.seen_policy}"]["NDCG@10"]
    assert t[(t.system == "model")].iloc[0]["NDCG@10"] == want


def test_experiment_sections(hostile_runs, tmp_path):
    html = build_report([hostile_runs[2]], tmp_path / "e.html", experiments=True, progress=False).read_text()
    for title in ("data diagnostics", "order sensitivity", "translation vector", "same-item attention"):
        assert f">Experiment: {title}</h2>" in html
    html0 = build_report([hostile_runs[0]], tmp_path / "e0.html", experiments=True, progress=False).read_text()
    assert ">Experiment: order sensitivity</h2>" in html0 and "translation vector</h2>" not in html0


def test_comparison_page_and_errors(hostile_runs, tmp_path):
    out = build_report([hostile_runs[0], hostile_runs[2]], tmp_path / "c.html", progress=False)
    html = out.read_text()
    assert ">Metrics by model</h2>" in html and ">Attention patterns per model</h2>" in html
    with pytest.raises(UserError, match="unknown sequence id|not in"):
        build_report([hostile_runs[2]], tmp_path / "x.html", seq_ids=["nobody"], progress=False)
    assert not (tmp_path / "x.html").exists()


def test_sections_render_in_order_with_deterministic_figure_ids():
    import plotly.graph_objects as go

    a, b = Section("A").text("<p>"), Section("B").figure(go.Figure()).figure(go.Figure())
    html = render("t", "s", [a, b])
    assert html.index(">A</h2>") < html.index(">B</h2>") and 'id="fig0"' in html and 'id="fig1"' in html
    assert "&lt;p&gt;" in html


def test_report_in_a_real_browser(hostile_runs, tmp_path):
    require_chromium()
    for runs, name in (([hostile_runs[2]], "one.html"), ([hostile_runs[0], hostile_runs[2]], "compare.html")):
        out = build_report(runs, tmp_path / name, experiments=True, progress=False)
        seen = open_in_chromium(out, tmp_path / f"browser-{name}")
        assert seen["errors"] == [], seen["errors"]
        assert seen["alerts"] == [], "a hostile title executed"
        assert seen["figures"] > 0 and seen["plots"] == seen["figures"] and seen["drawn"] == seen["figures"]
        assert seen["images"] == 0  # an <img> from a title would be one
        assert seen["requests"] == [], seen["requests"]


def test_browser_probe_sees_errors_alerts_and_requests(tmp_path):
    """The harness itself can fail: a page that errs, alerts and fetches is reported as such."""
    require_chromium()
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head></head><body><img src="http://127.0.0.1:9/x.png">'
                    "<script>alert(1); undefinedFunction();</script></body></html>")
    seen = open_in_chromium(page, tmp_path / "browser")
    assert seen["alerts"] == ["1"] and seen["images"] == 1
    assert seen["errors"][0].startswith("Uncaught ReferenceError") and len(seen["errors"]) == 2  # + the failed image
    assert seen["requests"] == ["http://127.0.0.1:9/x.png"]


def test_a_required_browser_that_is_missing_fails_the_test(monkeypatch):
    import tests.browser as browser

    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.setenv("CIRCUITS_REQUIRE_BROWSER", "1")
    with pytest.raises(BaseException) as outcome:  # a skip is an exception too: it must not be what comes out
        browser.require_chromium()
    assert outcome.type is pytest.fail.Exception and "required" in str(outcome.value), outcome.type
    monkeypatch.delenv("CIRCUITS_REQUIRE_BROWSER")
    with pytest.raises(BaseException) as outcome:
        browser.require_chromium()
    assert outcome.type is pytest.skip.Exception, outcome.type


def test_rank_section_on_a_seeded_user_sample_and_no_split_of_every_user(hostile_runs, tmp_path, monkeypatch):
    """--eval-users: the rank section ranks a seeded sample and says so; with a sample, no section builds an
    evaluation split of every user (the head scores read the first 256 validation users only)."""
    from circuits.data.sequences import SequenceDataset, sample_eval_users

    run = load_run(hostile_runs[2])
    ds = run.dataset()
    eligible = int((ds.lengths >= 3).sum())
    built = []
    real = SequenceDataset.eval_split

    def spy(self, split, n_ctx, users=None):
        built.append((split, None if users is None else len(users)))
        return real(self, split, n_ctx, users=users)

    monkeypatch.setattr(SequenceDataset, "eval_split", spy)
    html = build_report([hostile_runs[2]], tmp_path / "s.html", eval_users=9, eval_seed=2, progress=False).read_text()
    assert f"a seeded sample of 9 of {eligible:,} test users (seed 2;" in html
    assert built and all(n is not None and n <= 256 for _, n in built), built
    table = S.rank_table_for(run, ds, eval_users=9, eval_seed=2)
    assert set(table["user_id"]) == set(ds.user_ids[sample_eval_users(ds, 9, 2)])
    assert "every test user" in build_report([hostile_runs[2]], tmp_path / "a.html", progress=False).read_text()


def test_the_default_rank_sample_is_every_user_until_users_times_items_is_large(hostile_runs, monkeypatch):
    ds = load_run(hostile_runs[2]).dataset()
    eligible = int((ds.lengths >= 3).sum())
    assert S.report_eval_users(ds) == 0 and S.report_eval_users(ds, 7) == 7 and S.report_eval_users(ds, 0) == 0
    monkeypatch.setattr(S, "REPORT_RANK_ENTRIES", eligible * ds.n_items)
    assert S.report_eval_users(ds) == 0
    monkeypatch.setattr(S, "REPORT_RANK_ENTRIES", eligible * ds.n_items - 1)
    assert S.report_eval_users(ds) == (eligible * ds.n_items - 1) // ds.n_items == eligible - 1
