"""Data-parallel training: `torchrun --nproc_per_node 2` on CPU (gloo) gives the weights of one process with the
same global batch; rank 0 alone writes the run; --resume works under torchrun; the streamed batch schedule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from circuits.training.schedule import epoch_batches, length_batches
from tests.helpers import tiny_journeys

# dropout off: its masks depend on how a batch is split; everything else is the same computation
SETUP = ["--layers", "2", "--d-model", "16", "--d-head", "8", "--batch-size", "32", "--warmup-steps", "5",
         "--dropout", "0", "--quiet", "--epochs", "3", "--patience", "50"]
ROOT = Path(__file__).resolve().parents[1]


def _train(data: Path, out: Path, processes: int, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m circuits.train` as one process, or under torchrun with `processes` CPU ranks (gloo)."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*launch, "-m", "circuits.train", "--data", str(data), "--out", str(out), *SETUP, *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_journeys(tmp_path_factory.mktemp("ddp") / "data", n_users=90, max_length=14)


@pytest.mark.parametrize("negatives", [["--negatives", "0"], ["--negatives", "16"],
                                       ["--negatives", "8", "--in-batch-negatives"],
                                       ["--negatives", "16", "--sparse-items", "on"]],
                         ids=["full-softmax", "sampled", "sampled+in-batch", "sparse-items"])
def test_two_processes_equal_one_process_with_the_same_global_batch(data, tmp_path, negatives):
    one = _train(data, tmp_path / "one", 1, *negatives)
    two = _train(data, tmp_path / "two", 2, *negatives)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert not torch.equal(a["W_E"], load_file(str(tmp_path / "one" / "model.safetensors"))["W_E"] * 0)
    # the same decisions (same validation figures each epoch), and rank 0 wrote one complete run
    e1, e2 = (pd.read_csv(tmp_path / r / "epochs.csv") for r in ("one", "two"))
    assert len(e1) == len(e2) == 3
    cols = ["loss", "valid_HR@10", "valid_NDCG@10", "valid_MRR@10", "steps"]
    np.testing.assert_allclose(e1[cols].to_numpy(), e2[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["train"]["processes"] == 2
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["training"]["processes"] == 2
    assert not (tmp_path / "two.partial").exists()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert "run:" in one.stdout and "run:" in two.stdout and two.stdout.count("run:") == 1  # rank 0 alone prints


def test_a_different_global_batch_gives_different_weights(data, tmp_path):
    """The guard of the test above: it can tell runs apart (a batch of 16 is not a batch of 32)."""
    _train(data, tmp_path / "one", 1)
    _train(data, tmp_path / "two", 2, "--batch-size", "16")
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert not torch.allclose(a["W_E"], b["W_E"], atol=1e-3)


def test_resume_under_torchrun_continues_to_the_weights_of_an_uninterrupted_run(data, tmp_path, monkeypatch):
    from circuits import train
    from tests.helpers import interrupt_at_second_epoch

    _train(data, tmp_path / "full", 1, "--negatives", "16")
    interrupt_at_second_epoch(monkeypatch)  # one process, stopped in its second epoch: state of the first kept
    code = train.main(["--data", str(data), "--out", str(tmp_path / "cut"), *SETUP, "--negatives", "16"])
    assert code == 130 and (tmp_path / "cut.partial" / "state.pt").exists()
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*launch, "-m", "circuits.train", "--resume", "--out", str(tmp_path / "cut"), "--quiet"],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["training"]["epochs_run"] == 3


def test_epoch_batches_without_steps_per_epoch_are_the_old_length_batches():
    lengths = np.random.default_rng(0).integers(1, 9, 103)
    for epoch in (0, 3):
        old = length_batches(lengths, 10, np.random.default_rng([7, epoch]))
        new = epoch_batches(lengths, 10, 7, epoch, 0)
        assert all(np.array_equal(a, b) for a, b in zip(old, new)) and len(old) == len(new)


def test_steps_per_epoch_stream_passes_each_sequence_once_per_pass():
    lengths = np.random.default_rng(1).integers(1, 9, 95)  # 10 batches per pass of 10
    stream = [b for e in range(7) for b in epoch_batches(lengths, 10, 3, e, 3)]  # 21 steps: 2 passes and 1 step
    assert len(stream) == 21
    for p in range(2):
        seen = np.sort(np.concatenate(stream[p * 10 : (p + 1) * 10]))
        np.testing.assert_array_equal(seen, np.arange(95))
        expected = length_batches(lengths, 10, np.random.default_rng([3, p]))
        assert all(np.array_equal(a, b) for a, b in zip(stream[p * 10 : (p + 1) * 10], expected))
    np.testing.assert_array_equal(stream[20], length_batches(lengths, 10, np.random.default_rng([3, 2]))[0])
