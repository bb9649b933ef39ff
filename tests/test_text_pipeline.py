"""Text and hybrid runs through the whole pipeline: trained by the train command from an embedding file,
resumed, evaluated (faiss exact = the torch full ranking on a real run), decomposed, paired, scored, reported
and analysed; and the train command's one-line errors for bad text input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from analyses import order, same_item, translation
from circuits import decompose, evaluate, heads, pairs, train
from circuits.cli import run_cli
from circuits.report import __main__ as report
from circuits.runs import load_run
from circuits.scoring.evaluator import evaluation_splits
from circuits.scoring.retrieval import build_index, item_vectors, retrieval_ranks, user_vectors
from circuits.text import ItemEmbeddings, read_embeddings, write_embeddings
from tests.helpers import FAST, interrupt_at_second_epoch, tiny_journeys, train_tiny


def random_embeddings(folder, path, d: int = 12, seed: int = 0, drop: int = 0):
    """Unit vectors for every document of a synthetic folder's items.tsv (the last `drop` left out)."""
    ids = pd.read_csv(folder / "items.tsv", sep="\t", dtype=str)["item_id"].to_numpy()
    ids = ids[: len(ids) - drop]
    v = np.random.default_rng(seed).normal(size=(len(ids), d)).astype(np.float32)
    return write_embeddings(ItemEmbeddings(ids, v / np.linalg.norm(v, axis=1, keepdims=True),
                                           {"model": "random", "columns": None}), path)


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-runs")
    folder = tiny_journeys(root / "data", n_users=80, max_length=14)
    emb = random_embeddings(folder, root / "emb.npz")
    common = ["--embeddings", str(emb), "--cold-items", "0.2"]
    return folder, emb, {
        "text": train_tiny(folder, root / "text", 2, "--embed", "text", "--unembed", "text", *common),
        "hybrid": train_tiny(folder, root / "hybrid", 1, "--embed", "hybrid", "--unembed", "hybrid", *common),
        "id": train_tiny(folder, root / "id", 1, "--cold-items", "0.2"),
    }


def test_a_text_run_is_self_describing(text_runs):
    _, emb, runs = text_runs
    run = load_run(runs["text"])
    config = json.loads((runs["text"] / "config.json").read_text())
    assert config["model"]["embed_side"] == config["model"]["unembed_side"] == "text"
    assert config["model"]["d_text"] == 12 and config["text"]["source"] == str(emb)
    ds = run.dataset()
    vectors = read_embeddings(emb)
    row = {i: r for r, i in enumerate(vectors.ids)}
    want = np.stack([vectors.vectors[row[i]] for i in ds.item_ids[1:]])
    np.testing.assert_allclose(run.model.E_text[1:].numpy(), want)  # the run carries its pool's vectors
    assert set(run.metrics["model"]) == {"valid", "test", "test/cold", "test/warm"}
    assert set(run.metrics["baselines"]) >= {"emb-mean", "text-knn", "markov"}


@pytest.mark.parametrize("side", ["text", "hybrid", "id"])
def test_stored_metrics_faiss_exact_and_the_rank_table_agree_on_a_trained_cold_start_run(side, text_runs):
    """metrics.json (torch full ranking), faiss's exact index and the decomposition's full-model ranks are three
    computations of one ranking: they must agree, cold targets and unseen items included."""
    from circuits.interp.ranks import rank_table
    from circuits.scoring.metrics import metrics_from_ranks

    run = load_run(text_runs[2][side])
    ds = run.dataset()
    assert run.model.unseen.sum() >= ds.info["cold_items_held_out"] > 0  # held out, or only ever a target
    unscorable = run.model.unscorable
    assert (unscorable is not None) == (side == "id")
    for name, split in evaluation_splits(ds, run.model.cfg.n_ctx).items():
        index = build_index(item_vectors(run.model), "exact", None if unscorable is None else ~unscorable.numpy())
        for policy, r in retrieval_ranks(index, user_vectors(run.model, split), split, k=20).items():
            got, want = metrics_from_ranks(r), run.metrics["model"][name][policy]
            assert all(abs(got[m] - want[m]) < 1e-6 for m in want), (name, policy)
        table = rank_table(run.model, ds, split, exclude_seen=run.seen_policy == "excluded")
        full = table[table["component"] == max((c for c in table["component"].unique() if c.startswith("L0")),
                                               key=len)]
        got = metrics_from_ranks(full["rank"].to_numpy())
        want = run.metrics["model"][name][f"full/{run.seen_policy}"]
        assert all(abs(got[m] - want[m]) < 1e-6 for m in want), (name, "rank table")
    cold = run.metrics["model"]["test/cold"]["full/excluded"]["HR@20"]
    assert cold == 0.0 if side == "id" else cold >= 0.0
    from circuits.scoring.retrieval import retrieval_table

    table = retrieval_table(run.model, ds.eval_split("test", run.model.cfg.n_ctx), kinds=("exact",))
    n_scorable = ds.n_items - (0 if unscorable is None else int(unscorable.sum()))
    assert table["n_items"].iloc[0] == n_scorable  # by default the index holds what the model can recommend
    test = run.metrics["model"]["test"]
    assert abs(table["full/excluded NDCG@10"].iloc[0] - test["full/excluded"]["NDCG@10"]) < 1e-6


def test_an_interrupted_text_run_resumes_to_the_same_weights(text_runs, tmp_path, monkeypatch):
    import circuits.training.loop as training

    folder, emb, _ = text_runs
    args = ["--embed", "hybrid", "--unembed", "text", "--embeddings", str(emb), "--dropout", "0"]
    train_tiny(folder, tmp_path / "straight", 1, *args)
    real_validate = interrupt_at_second_epoch(monkeypatch)
    assert train.main(["--layers", "1", "--data", str(folder), "--out", str(tmp_path / "cut"), *FAST, *args]) == 130
    monkeypatch.setattr(training, "validate", real_validate)
    kept = emb.read_bytes()
    emb.unlink()  # resuming needs no embedding file: the state holds E_text
    try:
        assert train.main(["--resume", "--out", str(tmp_path / "cut"), "--quiet"]) == 0
    finally:
        emb.write_bytes(kept)
    a, b = load_file(str(tmp_path / "straight/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert a.keys() == b.keys() and "E_text" in a and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("side", ["text", "hybrid"])
def test_every_command_runs_on_a_text_run(side, text_runs, tmp_path, capsys):
    run_dir = text_runs[2][side]
    user = load_run(run_dir).dataset().user_ids[0]
    commands = [
        (evaluate, [str(run_dir), "--faiss"]),
        (decompose, [str(run_dir), "--seq-id", user, "--json"]),
        (decompose, [str(run_dir), "--all", "--out", str(tmp_path / "ranks.parquet")]),
        (pairs, [str(run_dir), "--circuit", "L0", "--top", "5"]),
        (pairs, [str(run_dir), "--circuit", "OV:L0H1", "--top", "5"]),
        (heads, [str(run_dir), "--ablate"]),
        (report, [str(run_dir), "--out", str(tmp_path / "r.html"), "--quiet"]),
        (same_item, [str(run_dir), "--out", str(tmp_path / "si")]),
        (order, [str(run_dir), "--out", str(tmp_path / "order")]),
        (translation, [str(run_dir), "--out", str(tmp_path / "tr")]),
    ]
    for command, argv in commands:
        assert command.main(argv) in (0, None), command.__name__
    out = capsys.readouterr().out
    assert "RETRIEVAL through faiss" in out and "test/cold" in out
    html = (tmp_path / "r.html").read_text()
    assert "Cold and warm test targets" in html and "text embeddings: random (12 dims" in html
    table = pd.read_csv(tmp_path / "si" / "same_item.csv")
    assert set(table["near_basis"]) == {"text"} and "twin" in table  # the planted duplicates of the tiny data


def one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_text_input_is_one_line_and_writes_no_run(text_runs, tmp_path, capsys, monkeypatch):
    from circuits.text import encoder

    folder, emb, _ = text_runs
    monkeypatch.chdir(tmp_path)
    text = ["--layers", "1", "--data", str(folder), "--out", "run", "--embed", "text", "--unembed", "text", "--quiet"]
    short = random_embeddings(folder, tmp_path / "short.parquet", drop=3)
    assert "the embeddings cover" in one_line_error([*text, "--embeddings", str(short)], capsys)
    flat = tmp_path / "flat.npy"  # one number per item: no dimension at all
    np.save(flat, np.ones(len(read_embeddings(emb).ids), dtype=np.float32))
    flat.with_suffix(".ids.txt").write_text("\n".join(read_embeddings(emb).ids) + "\n")
    assert "dimension" in one_line_error([*text, "--embeddings", str(flat)], capsys)
    assert "no column 'summary'" in one_line_error([*text, "--text-cols", "title", "summary"], capsys).replace(
        "no text column", "no column")
    (tmp_path / "notamodel").mkdir()
    assert "not a sentence-transformers model folder" in one_line_error(
        [*text, "--embeddings", str(tmp_path / "notamodel")], capsys)
    monkeypatch.setattr(encoder, "MINILM_SHA256", "0" * 64)
    assert "is not the pinned" in one_line_error(text, capsys)
    assert "go with --embed or --unembed" in one_line_error(
        ["--layers", "1", "--data", str(folder), "--out", "run", "--embeddings", str(emb)], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.ids.txt", "flat.npy", "notamodel", "short.parquet"]


def test_same_item_judges_an_id_run_by_text_embeddings_when_given(text_runs, tmp_path):
    from circuits.interp.sources import same_item_table

    _, emb, runs = text_runs
    assert same_item.main([str(runs["id"]), "--embeddings", str(emb), "--near-cosine", "0.5",
                           "--out", str(tmp_path / "si")]) == 0
    table = pd.read_csv(tmp_path / "si" / "same_item.csv").set_index(["head", "pattern"])
    assert set(table["near_basis"]) == {"text (emb.npz)"}
    run = load_run(runs["id"])
    ds = run.dataset()
    vectors = read_embeddings(emb)
    row = {i: r for r, i in enumerate(vectors.ids)}
    E = np.zeros((ds.d_vocab, vectors.dim), dtype=np.float32)
    E[1:] = vectors.vectors[[row[i] for i in ds.item_ids[1:]]]
    sp = ds.eval_split("test", run.model.cfg.n_ctx)
    want = same_item_table(run.model, sp.history, 0.5, vectors=torch.from_numpy(E), times=sp.history_times
                          ).set_index(["head", "pattern"])
    np.testing.assert_allclose(table.loc[want.index, "near"], want["near"], atol=1e-6)
    default = same_item_table(run.model, sp.history, 0.5, times=sp.history_times).set_index(["head", "pattern"])
    # (W_E: another answer)
    assert not np.allclose(default["near"], want["near"])
