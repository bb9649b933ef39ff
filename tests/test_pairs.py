import numpy as np
import pytest
import torch

from circuits.config import ModelConfig
from circuits.interp.circuit_pairs import circuit_factors, top_pairs
from circuits.model import build_model


def dense_reference(table: torch.Tensor, k: int, per_row: bool, exclude_self: bool, keep: torch.Tensor):
    V = table.shape[0]
    entries = []
    for a in range(1, V):
        row = []
        for b in range(1, V):
            if keep[a] and keep[b] and not (exclude_self and a == b):
                row.append((-float(table[a, b]), a, b))
        entries += sorted(row)[:k] if per_row else row
    entries.sort()
    return entries if per_row else entries[:k]


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_blockwise_top_pairs_equal_a_dense_computation(per_row, exclude_self):
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(37, 5, generator=g), torch.randn(5, 37, generator=g)
    keep = torch.rand(37, generator=g) > 0.2
    rows, cols, vals = top_pairs(left, right, 7, per_row, exclude_self, keep, block=6)
    want = dense_reference(left @ right, 7, per_row, exclude_self, keep.clone())
    assert [(a, b) for _, a, b in want] == list(zip(rows.tolist(), cols.tolist()))
    np.testing.assert_allclose(vals, [-v for v, _, _ in want], rtol=1e-5)


def test_circuit_factors_multiply_to_the_circuit_tables():
    model = build_model(ModelConfig(d_vocab=9, n_ctx=4, n_layers=1, n_heads=2, d_model=6, d_head=3))
    l, r = circuit_factors(model, "OV:L0H1")
    a = model.blocks[0].attn
    torch.testing.assert_close(l @ r, model.W_E @ a.W_V[1] @ a.W_O[1] @ model.W_U)
    l, r = circuit_factors(model, "QK:L0H0")
    torch.testing.assert_close(l @ r, model.W_E @ a.W_Q[0] @ a.W_K[0].T @ model.W_E.T / 3**0.5)


def test_zero_layer_model_lists_the_planted_series_pairs(tmp_path, capsys):
    import json

    from circuits import pairs, train
    from circuits.data.synthetic import SyntheticConfig, write

    cfg = SyntheticConfig(n_topics=6, docs_per_topic=10, series_per_topic=4, n_users=400, min_length=10,
                          max_length=25, p_series=0.9, p_revisit=0.05)
    folder = write(cfg, tmp_path / "bigrams")
    truth = json.loads((folder / "ground_truth.json").read_text())
    assert len(truth["series_pairs"]) >= 50
    train.main(["--layers", "0", "--data", str(folder), "--out", str(tmp_path / "L0"), "--epochs", "15",
                "--quiet", "--d-model", "32", "--batch-size", "32"])
    capsys.readouterr()
    pairs.main([str(tmp_path / "L0"), "--top", "50", "--exclude-self", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert len(out["pairs"]) == 50
    assert out["planted_series_precision"] >= 0.9
