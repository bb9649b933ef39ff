"""Train tiny 0/1/2-layer models through the CLIs in seconds, evaluate them, and check the run directory."""

import json
import math
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from circuits import evaluate, train
from circuits.data.synthetic import SyntheticConfig, write
from circuits.errors import UserError
from circuits.runs import load_run
from tests.helpers import interrupt_at_second_epoch

TINY = SyntheticConfig(n_topics=4, docs_per_topic=10, series_per_topic=1, n_users=120, min_length=8, max_length=16)
FAST = ["--d-model", "16", "--d-head", "8", "--batch-size", "32", "--quiet", "--warmup-steps", "5"]


@pytest.fixture(scope="module")
def journeys(tmp_path_factory):
    return write(TINY, tmp_path_factory.mktemp("data") / "journeys")


def run_train(journeys, out, layers, *extra):
    return train.main(["--layers", str(layers), "--data", str(journeys), "--out", str(out), "--epochs", "3", *FAST, *extra])


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_train_and_evaluate_each_depth(journeys, tmp_path, capsys, layers):
    out = tmp_path / f"L{layers}"
    assert run_train(journeys, out, layers) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "argv.json", "config.json", "epochs.csv", "metrics.json", "model.safetensors", "vocab.tsv"]
    run = load_run(out)
    assert run.model.cfg.n_layers == layers and len(run.epochs) == 3
    assert run.config["data"]["fingerprint"] == run.dataset().fingerprint
    assert run.vocab["title"].iloc[1] != "" and run.vocab["index"].iloc[0] == 0
    capsys.readouterr()
    assert evaluate.main([str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for split in ("valid", "test"):
        for protocol in ("full/excluded", "full/included", "sampled"):
            m = metrics["model"][split][protocol]
            assert {"HR@1", "NDCG@5", "MRR@20", "NDCG@10"} <= set(m) and 0 <= m["NDCG@10"] <= 1
    assert set(metrics["baselines"]) == {"most-popular", "repeat", "markov"}
    # the checkpoint is the best validation epoch, and metrics.json says which
    best = run.epochs["valid_NDCG@10"].idxmax()
    assert run.metrics["training"]["best_epoch"] == int(run.epochs["epoch"][best])


def test_same_seed_same_weights(journeys, tmp_path):
    run_train(journeys, tmp_path / "a", 1)
    run_train(journeys, tmp_path / "b", 1)
    a, b = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("extra", [(), ("--ema", "0.9")], ids=["weights", "ema"])  # the average is resumed too
def test_interrupted_run_is_partial_and_resume_finishes_it_identically(journeys, tmp_path, monkeypatch, extra):
    import circuits.training.loop as training

    run_train(journeys, tmp_path / "straight", 2, *extra)
    real_validate = interrupt_at_second_epoch(monkeypatch)
    assert run_train(journeys, tmp_path / "cut", 2, *extra) == 130  # reported, not a traceback
    monkeypatch.setattr(training, "validate", real_validate)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial/state.pt").exists()
    with pytest.raises(UserError, match="unfinished"):
        load_run(tmp_path / "cut")
    assert train.main(["--resume", "--out", str(tmp_path / "cut"), "--quiet"]) == 0
    a, b = load_file(str(tmp_path / "straight/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    assert not (tmp_path / "cut.partial").exists()


def test_loss_seen_auto_follows_the_resolved_seen_policy(journeys, tmp_path):
    """The journeys repeat items, so the default policy is included and auto keeps every item in the loss; with
    --seen-policy excluded, auto leaves the history out, exactly as --loss-seen excluded does."""
    def weights(name, *extra):
        run_train(journeys, tmp_path / name, 1, "--epochs", "1", *extra)
        return load_file(str(tmp_path / name / "model.safetensors")), load_run(tmp_path / name).config["train"]

    def same(a, b):
        return all((a[k] == b[k]).all() for k in a)

    auto_ex, cfg = weights("auto-ex", "--seen-policy", "excluded")
    assert (cfg["loss_seen"], cfg["resolved_loss_seen"]) == ("auto", "excluded")
    assert same(auto_ex, weights("ex", "--seen-policy", "excluded", "--loss-seen", "excluded")[0])
    assert not same(auto_ex, weights("in", "--seen-policy", "excluded", "--loss-seen", "included")[0])
    auto, cfg = weights("auto")
    assert (cfg["resolved_seen_policy"], cfg["resolved_loss_seen"]) == ("included", "included")
    assert same(auto, weights("auto-in", "--loss-seen", "included")[0])


def test_bad_inputs_leave_nothing_behind(journeys, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(UserError, match="--layers must be 0 or more"):
        run_train(journeys, out, -1)
    with pytest.raises(UserError, match="data not found"):
        train.main(["--data", str(tmp_path / "missing.csv"), "--out", str(out)])
    with pytest.raises(UserError, match="invalid int value"):
        train.main(["--layers", "two"])
    with pytest.raises(UserError, match="--static-over goes with --attention static or learned"):
        train.main(["--attention", "uniform", "--static-over", "time", "--out", str(out)])
    with pytest.raises(UserError, match="--attention static needs scores over something"):
        train.main(["--attention", "static", "--static-over", "none", "--out", str(out)])
    with pytest.raises(UserError, match=r"--ema must be in \[0, 1\), got 1.0"):
        run_train(journeys, out, 1, "--ema", "1")
    with pytest.raises(UserError, match="--ema needs dense item tables"):
        run_train(journeys, out, 1, "--ema", "0.9", "--negatives", "8", "--sparse-items", "on")
    with pytest.raises(UserError, match="--loss-seen excluded needs a full softmax"):
        run_train(journeys, out, 1, "--loss-seen", "excluded", "--negatives", "8")
    assert not out.exists() and not (tmp_path / "bad.partial").exists()
    with pytest.raises(UserError, match="run directory not found"):
        evaluate.main([str(tmp_path / "nope")])


def test_checkpoint_that_does_not_match_the_data(journeys, tmp_path):
    run_train(journeys, tmp_path / "run", 0)
    other = write(SyntheticConfig(**{**TINY.__dict__, "seed": 5}), tmp_path / "other")
    with pytest.raises(UserError, match="does not match the data"):
        evaluate.main([str(tmp_path / "run"), "--data", str(other)])


def test_cli_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "circuits.train", "--layers", "-1", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --layers must be 0 or more, got -1"]
    assert not (tmp_path / "x").exists()


def test_plateau_decay_and_checkpoint_follow_the_validation_scores(journeys, tmp_path, monkeypatch):
    """Scripted validation scores, so the decay must fire: after 2 epochs without a better score (counted from
    the best epoch or the last decay) the lr halves; the checkpoint is the first best epoch."""
    import circuits.training.loop as loop

    scores = iter([0.10, 0.20, 0.20, 0.20, 0.20, 0.30, 0.30, 0.30, 0.30])
    monkeypatch.setattr(loop, "validate", lambda *a, **kw: {"HR@10": 0.5, "NDCG@10": next(scores), "MRR@10": 0.1})
    run_train(journeys, tmp_path / "d", 0, "--decay-patience", "2", "--decay-factor", "0.5", "--epochs", "9",
              "--patience", "9", "--lr", "0.01")
    run = load_run(tmp_path / "d")
    assert run.epochs["lr"].tolist() == pytest.approx([0.01] * 4 + [0.005] * 4 + [0.0025])
    assert run.epochs["valid_NDCG@10"].tolist() == [0.10, 0.20, 0.20, 0.20, 0.20, 0.30, 0.30, 0.30, 0.30]
    assert run.metrics["training"]["best_epoch"] == 5 and run.metrics["training"]["stopped_by"] == "epochs"


def test_cosine_schedule_anneals_over_the_epochs_steps_and_never_decays_on_plateaus(journeys, tmp_path, monkeypatch):
    """Without a time budget, `--schedule cosine` follows the steps of --epochs: the lr logged after each epoch is
    the half cosine at that epoch's last step; the flat scores would have fired the plateau decay (which the
    cosine leaves alone)."""
    import circuits.training.loop as loop

    monkeypatch.setattr(loop, "validate", lambda *a, **kw: {"HR@10": 0.5, "NDCG@10": 0.2, "MRR@10": 0.1})
    run_train(journeys, tmp_path / "c", 0, "--schedule", "cosine", "--epochs", "5", "--patience", "9", "--lr", "0.01",
              "--min-lr", "0.001", "--decay-patience", "1")
    run = load_run(tmp_path / "c")
    n = int(run.epochs["steps"].iloc[0])
    last_step = [(e + 1) * n - 1 for e in range(5)]
    expected = [0.001 + 0.009 * (1 + math.cos(math.pi * s / (5 * n))) / 2 for s in last_step]
    assert run.epochs["lr"].tolist() == pytest.approx(expected)
    assert run.config["train"]["schedule"] == "cosine"


def test_ema_keeps_the_running_average_of_the_weights_after_every_step(journeys, tmp_path, monkeypatch):
    """`--ema d`: the kept (and validated) weights are e_1 = w_1, e_t = d e_(t-1) + (1 - d) w_t over the weights w_t
    after each optimiser step, recomputed here from weights recorded at every step (one epoch, so the kept epoch
    is the last); the logged validation score is the average's, not the raw weights'."""
    import torch

    import circuits.training.loop as loop

    steps, real_init, real_step = [], loop.Optimizers.__init__, loop.Optimizers.step

    def init(self, step_loss, cfg):
        real_init(self, step_loss, cfg)
        self.recorded = step_loss.model

    def step(self):
        real_step(self)
        steps.append({k: p.detach().clone() for k, p in self.recorded.named_parameters()})

    monkeypatch.setattr(loop.Optimizers, "__init__", init)
    monkeypatch.setattr(loop.Optimizers, "step", step)
    assert run_train(journeys, tmp_path / "e", 1, "--ema", "0.8", "--epochs", "1") == 0
    assert len(steps) >= 3
    average = steps[0]
    for w in steps[1:]:
        average = {k: 0.8 * average[k] + 0.2 * w[k] for k in average}
    kept = load_file(str(tmp_path / "e" / "model.safetensors"))
    for k in average:
        torch.testing.assert_close(kept[k], average[k], rtol=1e-5, atol=1e-6, msg=k)
    assert max((kept[k] - steps[-1][k]).abs().max().item() for k in average) > 1e-3  # not the last step's weights
    run = load_run(tmp_path / "e")
    split = run.dataset().eval_split("valid", run.model.cfg.n_ctx)
    logged = run.epochs["valid_NDCG@10"].iloc[0]
    assert logged == pytest.approx(loop.validate(run.model, split, "included")["NDCG@10"], abs=1e-6)
    assert run.config["train"]["ema"] == 0.8


def test_decompose_cli_single_sequence_all_and_errors(journeys, tmp_path, capsys):
    import pandas as pd
    import torch

    from circuits import decompose

    run_train(journeys, tmp_path / "run", 2)
    run = load_run(tmp_path / "run")
    ds = run.dataset()
    user = ds.user_ids[3]
    capsys.readouterr()
    assert decompose.main([str(tmp_path / "run"), "--seq-id", user, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    comps = {c["component"]: c for c in view["components"]}
    split = ds.eval_split("test", run.model.cfg.n_ctx)
    row = list(split.users).index(ds.user_index(user))
    hist = torch.from_numpy(split.history[row : row + 1])
    times = torch.from_numpy(split.history_times[row : row + 1])  # the default attention reads time gaps
    first = (hist[0] != 0).nonzero()[0, 0]
    with torch.no_grad():
        full = run.model(hist[:, first:], times[:, first:])[0, -1]
    assert abs(comps["L0+L1+L2"]["target_logit"] - full[split.target[row]].item()) < 1e-4
    parts = sum(comps[c]["target_logit"] for c in ("embed", "pos", "L0H0", "L0H1", "L1H0", "L1H1"))
    assert abs(parts - comps["L0+L1+L2"]["target_logit"]) < 1e-4
    assert decompose.main([str(tmp_path / "run"), "--seq-id", user]) == 0  # the printed view
    assert "main attention sources" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown sequence id 'nobody'"):
        decompose.main([str(tmp_path / "run"), "--seq-id", "nobody"])
    out = tmp_path / "ranks.parquet"
    assert decompose.main([str(tmp_path / "run"), "--all", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert len(table) == len(split) * 11 and table["rank"].min() >= 1


def test_resume_refuses_data_that_changed(journeys, tmp_path, monkeypatch):
    import circuits.training.loop as training

    real_validate = interrupt_at_second_epoch(monkeypatch)
    assert run_train(journeys, tmp_path / "cut", 0) == 130
    monkeypatch.setattr(training, "validate", real_validate)
    config = json.loads((tmp_path / "cut.partial/config.json").read_text())
    config["data"]["fingerprint"] = "0" * 16
    (tmp_path / "cut.partial/config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not match the data"):
        train.main(["--resume", "--out", str(tmp_path / "cut"), "--quiet"])
