"""The notebook API shown in the README: train, load, evaluate, look at a sequence with titles."""

from circuits import ModelConfig, TrainConfig, evaluate_run, load_dataset, load_run, metrics_table, train_model
from circuits.data.synthetic import SyntheticConfig, write


def test_readme_notebook_example(tmp_path):
    folder = write(SyntheticConfig(n_topics=3, docs_per_topic=8, series_per_topic=1, n_users=60,
                                   min_length=6, max_length=12), tmp_path / "j")
    ds = load_dataset(str(folder))
    cfg = ModelConfig(d_vocab=ds.d_vocab, n_ctx=12, n_layers=1, d_model=8, d_head=4)
    record = {"data": {"source": str(folder), "options": {}}}
    run_dir = train_model(ds, cfg, TrainConfig(epochs=2, batch_size=16), tmp_path / "run", record, progress=False)
    run = load_run(run_dir)
    seq = run.dataset().sequence(ds.user_ids[0])
    assert list(seq.columns) == ["position", "item", "item_id", "title", "timestamp", "split"]
    table = metrics_table(evaluate_run(run))
    assert set(table["system"]) == {"model", "most-popular", "repeat", "markov"}
    assert table.loc[table["system"] == "model", "NDCG@10"].between(0, 1).all()
