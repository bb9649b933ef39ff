"""The torch-free path of a one-sequence decomposition (`circuits.model_numpy`, `circuits.interp.decomposition_numpy`)
against the model and the torch decomposition it stands in for: every attention kind, item side and depth."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.config import ModelConfig
from circuits.interp.decomposition import decompose_sequence
from circuits.interp.decomposition_numpy import decompose_sequence_numpy
from circuits.interp.frames import top_indices
from circuits.model import AttnOnlyTransformer, build_model
from circuits.model_numpy import NumpyModel, state_shapes
from circuits.runs import save_weights
from tests.helpers import ATTENTION_VARIANTS, ITEM_SIDE_VARIANTS, example_times, with_random_distance_weights

D_VOCAB = 13
ROOT = Path(__file__).resolve().parents[1]


def random_model(n_layers: int, attention: str, side: str, positional: bool = True, tied: bool = False,
                 d_vocab: int = D_VOCAB, unseen: tuple[int, ...] = (5,), seed: int = 0):
    """A model with random weights everywhere (static scores and hybrid id parts too, which start at zero) and
    items without training occurrences."""
    cfg = ModelConfig(d_vocab=d_vocab, n_ctx=12, n_layers=n_layers, n_heads=2, d_model=8, d_head=4,
                      positional=positional, tied=tied, **ATTENTION_VARIANTS[attention], **ITEM_SIDE_VARIANTS[side])
    g = torch.Generator().manual_seed(seed)
    E_text = torch.randn(d_vocab, cfg.d_text, generator=g) if cfg.uses_text else None
    if E_text is not None:  # items 2 and 7 near-identical in text (cosine 1), not in their learned vectors
        E_text[7] = 1.5 * E_text[2]
    model = with_random_distance_weights(build_model(cfg, seed=seed, E_text=E_text), seed=seed + 1)
    with torch.no_grad():
        for name in ("W_E_id", "W_U_id"):
            if hasattr(model, name):
                getattr(model, name).copy_(torch.randn(getattr(model, name).shape, generator=g))
    counts = np.ones(d_vocab)
    counts[list(unseen)] = 0
    model.set_unseen(counts)
    return model.eval()


def as_numpy(model, tmp_path: Path) -> NumpyModel:
    """Through the run directory's file, as `load_run_numpy` reads it."""
    save_weights(model, tmp_path / "model.safetensors")
    return NumpyModel.load(model.cfg, tmp_path / "model.safetensors")


ITEMS = np.array([4, 2, 7, 7, 1, 3, 5, 9, 12, 2, 6])
TIMES = example_times(len(ITEMS))[0].numpy()


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("attention", list(ATTENTION_VARIANTS))
@pytest.mark.parametrize("side", list(ITEM_SIDE_VARIANTS))
def test_numpy_forward_equals_the_model(tmp_path, n_layers, attention, side):
    model = random_model(n_layers, attention, side, positional=attention != "static")
    light = as_numpy(model, tmp_path)
    cache = light.run_with_cache(ITEMS, TIMES)
    with torch.no_grad():
        x, t = torch.from_numpy(ITEMS)[None], torch.from_numpy(TIMES)[None]
        logits, want = model.run_with_cache(x, times=t)
    names = [n for n in cache if n != "hook_resid_final"]
    assert len(names) == 1 + model.cfg.positional + 3 * n_layers
    for name in names:
        np.testing.assert_allclose(cache[name], want[name][0].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        assert cache[name].dtype == np.float32, name
    got_logits = light.mask_unscorable(cache["hook_resid_final"] @ light.W_U)
    np.testing.assert_allclose(got_logits, logits[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.isinf(got_logits), torch.isinf(logits[0]).numpy())


@pytest.mark.parametrize("variant", ["no-pos", "tied"])
def test_numpy_forward_without_positions_or_with_a_tied_unembedding(tmp_path, variant):
    model = random_model(2, "learned", "id", positional=variant != "no-pos", tied=variant == "tied")
    light = as_numpy(model, tmp_path)
    logits = light.mask_unscorable(light.run_with_cache(ITEMS, TIMES)["hook_resid_final"] @ light.W_U)
    with torch.no_grad():
        want = model(torch.from_numpy(ITEMS)[None], times=torch.from_numpy(TIMES)[None])[0].numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def test_numpy_forward_rejects_what_the_model_rejects(tmp_path):
    light = as_numpy(random_model(1, "learned+time", "id"), tmp_path)
    with pytest.raises(ValueError, match="padding"):
        light.run_with_cache(np.array([0, 3, 4]), TIMES[:3])
    with pytest.raises(ValueError, match="times"):
        light.run_with_cache(ITEMS[:3])
    with pytest.raises(ValueError, match="n_ctx"):
        light.run_with_cache(np.arange(1, 14) % 12 + 1, np.arange(13.0))


def test_top_indices_are_a_full_stable_sort_cut():
    """Best first, ties by lower index: the first k of a stable sort by descending score (ties and -inf included)."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 300)).astype(np.float32)
    scores[:, 100:140] = scores[:, 7:8]  # ties around a value
    scores[:, 200:] = -np.inf
    for k in (1, 7, 30, 120, 300):
        np.testing.assert_array_equal(top_indices(scores, k), np.argsort(-scores, axis=-1, kind="stable")[:, :k])


@pytest.mark.parametrize("attention", list(ATTENTION_VARIANTS))
@pytest.mark.parametrize("side", list(ITEM_SIDE_VARIANTS))
@pytest.mark.parametrize("variant", ["", "no-pos", "tied"])
def test_state_shapes_are_the_models(attention, side, variant):
    if variant == "tied" and side != "id":
        return
    for n_layers in (0, 2):
        cfg = ModelConfig(d_vocab=D_VOCAB, n_ctx=12, n_layers=n_layers, n_heads=2, d_model=8, d_head=4,
                          positional=variant != "no-pos", tied=variant == "tied", **ATTENTION_VARIANTS[attention],
                          **ITEM_SIDE_VARIANTS[side])
        want = {name: tuple(t.shape) for name, t in AttnOnlyTransformer(cfg).state_dict().items()}
        assert state_shapes(cfg) == want


def test_weights_of_another_config_are_rejected(tmp_path):
    model = random_model(1, "learned", "id")
    save_weights(model, tmp_path / "model.safetensors")
    from dataclasses import replace

    for cfg in (replace(model.cfg, n_layers=2), replace(model.cfg, d_model=16), replace(model.cfg, n_layers=0)):
        with pytest.raises(ValueError, match="do not fit the config"):
            NumpyModel.load(cfg, tmp_path / "model.safetensors")
    NumpyModel.load(model.cfg, tmp_path / "model.safetensors")  # its own config loads


class TinyLog:
    """The dataset surface a sequence view reads: three users over D_VOCAB − 1 items, with titles and times."""

    def __init__(self):
        rng = np.random.default_rng(3)
        lengths = [11, 6, 3]
        self.items = np.concatenate([ITEMS, rng.integers(1, D_VOCAB, 6), [8, 8, 2]]).astype(np.int64)
        self.timestamps = np.concatenate([TIMES, 1.7e9 + np.cumsum(rng.exponential(1e4, 6)),
                                          1.7e9 + np.array([0.0, 0.5, 60.0])])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.user_ids = np.array(["u1", "u2", "u3"], dtype=object)
        self.item_ids = np.array(["<pad>"] + [f"i{j}" for j in range(1, D_VOCAB)], dtype=object)
        self.titles = np.array(["<pad>"] + [f"title {j}" for j in range(1, D_VOCAB)], dtype=object)
        self.n_items = D_VOCAB - 1

    def user_index(self, user_id: str) -> int:
        return list(self.user_ids).index(user_id)


def assert_views_equal(got: dict, want: dict) -> None:
    for key in ("user_id", "split", "query_position", "target_item", "target_title", "n_items"):
        assert got[key] == want[key], key
    pd.testing.assert_frame_equal(got["sequence"], want["sequence"])
    g, w = got["components"], want["components"]
    assert g.component.tolist() == w.component.tolist()
    np.testing.assert_array_equal(g["rank"].to_numpy(), w["rank"].to_numpy())
    np.testing.assert_allclose(g.target_logit.to_numpy(), w.target_logit.to_numpy(), rtol=1e-5, atol=1e-5)
    assert g.target_logit.dtype == w.target_logit.dtype and g["rank"].dtype == w["rank"].dtype
    assert g.top_items.tolist() == w.top_items.tolist()
    pd.testing.assert_frame_equal(got["sources"], want["sources"], rtol=1e-5, atol=1e-5)
    pd.testing.assert_frame_equal(got["same_item_attention"], want["same_item_attention"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("attention", list(ATTENTION_VARIANTS))
@pytest.mark.parametrize("side", list(ITEM_SIDE_VARIANTS) + ["no-pos", "tied"])
def test_numpy_view_equals_the_torch_view(tmp_path, n_layers, attention, side):
    if side in ("no-pos", "tied"):
        model = random_model(n_layers, attention, "id", positional=side != "no-pos", tied=side == "tied")
    else:
        model = random_model(n_layers, attention, side)
    light, ds = as_numpy(model, tmp_path), TinyLog()
    for user, split, pos in (("u1", "test", -1), ("u1", "valid", 3), ("u2", "test", -1), ("u3", "valid", 0)):
        got = decompose_sequence_numpy(light, ds, user, split, pos, top=4)
        want = decompose_sequence(SimpleNamespace(model=model), ds, user, split, pos, top=4)
        assert_views_equal(got, want)
        assert len(got["sources"]) == n_layers * model.cfg.n_heads * (got["query_position"] + 1)
    assert ("pos" in got["components"].component.tolist()) == model.cfg.positional
    if n_layers and model.cfg.uses_text:  # u1's last query holds item 2, its keys 7 twice: near in text
        near = decompose_sequence_numpy(light, ds, "u1")["sources"].query("item == 7").near_same_item
        assert len(near) and near.all()


def test_the_unseen_target_ranks_last_in_both_views(tmp_path):
    """An id output gives unseen items -inf in every component: both views rank an unseen target behind every
    item, tied with the other unseen one (ties are pessimistic)."""
    model = random_model(1, "learned", "id", unseen=(3, 8))  # u1's item at position 5 is 3: the target at pos 4
    light, ds = as_numpy(model, tmp_path), TinyLog()
    got = decompose_sequence_numpy(light, ds, "u1", "test", 4, top=11)
    want = decompose_sequence(SimpleNamespace(model=model), ds, "u1", "test", 4, top=11)
    assert_views_equal(got, want)
    assert (got["components"]["rank"] == ds.n_items).all()
    # 10 scorable items, then the unseen ones tied at -inf: the lower index first; never padding
    assert all(top[-1] == "title 3" and "<pad>" not in top for top in got["components"].top_items)


@pytest.fixture(scope="module")
def tiny_run_dir(tmp_path_factory):
    from tests.helpers import tiny_journeys, train_tiny

    root = tmp_path_factory.mktemp("numpy-view")
    return train_tiny(tiny_journeys(root / "data", n_users=40, max_length=14), root / "L2", 2)


def test_the_command_needs_no_torch_and_prints_what_the_torch_path_prints(tiny_run_dir, capsys):
    """`decompose --seq-id` runs without importing torch (a fresh interpreter), and its JSON equals the torch
    path's (`decompose_sequence`, as `--paths` and the report take it) to float rounding."""
    from circuits import decompose
    from circuits.runs import load_run

    run = load_run(tiny_run_dir)
    user = str(run.dataset().user_ids[2])
    code = ("import sys; from circuits import decompose; decompose.main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'transformer_lens' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_run_dir), "--seq-id", user, "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    want = decompose_sequence(run, run.dataset(), user)
    assert got["target_item"] == want["target_item"] and got["query_position"] == want["query_position"]
    got_c = pd.DataFrame(got["components"])
    np.testing.assert_array_equal(got_c["rank"], want["components"]["rank"])
    np.testing.assert_allclose(got_c.target_logit, want["components"].target_logit, rtol=1e-5, atol=1e-5)
    assert got_c.top_items.tolist() == want["components"].top_items.tolist()
    got_s = pd.DataFrame(got["sources"])
    np.testing.assert_allclose(got_s.contribution, want["sources"].contribution, rtol=1e-5, atol=1e-6)
    decompose.main([str(tiny_run_dir), "--seq-id", user])
    text = capsys.readouterr().out
    assert "components (rank 1 = best" in text and "main attention sources per head" in text


def test_the_command_reports_bad_input_in_one_line(tiny_run_dir, tmp_path):
    """Each bad input is a UserError (one line from the shell), on the numpy path and, where it reads the run, on
    the torch one (`--paths`) alike."""
    import shutil

    from circuits import decompose
    from circuits.errors import UserError
    from circuits.runs import load_run

    user = str(load_run(tiny_run_dir).dataset().user_ids[0])

    def broken(name: str, edit) -> str:
        run = tmp_path / name
        shutil.copytree(tiny_run_dir, run)
        edit(run)
        return str(run)

    cases = {
        "not a complete run directory": [
            broken("no-model", lambda r: (r / "config.json").write_text(json.dumps(
                {k: v for k, v in json.loads((r / "config.json").read_text()).items() if k != "model"}))),
            broken("corrupt", lambda r: (r / "model.safetensors").write_bytes(b"not a safetensors file")),
            broken("no-metrics", lambda r: (r / "metrics.json").unlink()),
        ],
        "unfinished": [broken("moved", lambda r: r.rename(r.with_name("moved.partial")))],
        "not found": [str(tmp_path / "nothing")],
    }
    for message, runs in cases.items():
        for run in runs:
            for extra in ([], ["--paths"]):
                with pytest.raises(UserError, match=message):
                    decompose.main([run, "--seq-id", user, *extra])
    # a config whose weights do not fit: "not a complete run directory" on both paths
    other = broken("other-weights", lambda r: None)
    cfg = json.loads((tiny_run_dir / "config.json").read_text())
    model = build_model(ModelConfig.from_dict({**cfg["model"], "n_layers": 1}))
    save_weights(model, Path(other) / "model.safetensors")
    for extra in ([], ["--paths"]):
        with pytest.raises(UserError, match="not a complete run directory"):
            decompose.main([other, "--seq-id", user, *extra])
    for args, message in ((["--seq-id", "no-such-user"], "no-such-user"), (["--seq-id", user, "--pos", "999"], "--pos"),
                          (["--seq-id", user, "--top", "0"], "--top")):
        with pytest.raises(UserError, match=message):
            decompose.main([str(tiny_run_dir), *args])
