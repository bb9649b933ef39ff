"""Analyses at production size, checked at small size against direct computations: the pruned exact top pairs
against the whole table, the streamed rank table against the in-memory one, the Parquet outputs of
`decompose --all` (one file, a folder of parts) and a seeded user sample against the full table."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from circuits.config import ModelConfig
from circuits.interp.circuit_pairs import top_pairs
from circuits.model import build_model


def whole_table_top(left: torch.Tensor, right: torch.Tensor, k: int, exclude_self: bool = False,
                    keep: torch.Tensor | None = None):
    """The reference: the dense left @ right, masked (padding, keep, diagonal), the first k entries in the order
    value descending, row ascending, column ascending."""
    table = (left @ right).numpy()
    ok = np.ones(table.shape, dtype=bool)
    ok[0, :] = ok[:, 0] = False
    if keep is not None:
        ok &= keep.numpy()[:, None] & keep.numpy()[None, :]
    if exclude_self:
        np.fill_diagonal(ok, False)
    r, c = np.nonzero(ok & np.isfinite(table))
    v = table[r, c]
    order = np.lexsort((c, r, -v))[:k]
    return r[order], c[order], v[order]


def assert_same_pairs(got, want, exact: bool = True):
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    if exact:
        np.testing.assert_array_equal(got[2], want[2])
    else:
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5)


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_top_pairs_equal_the_whole_table_on_random_floats_with_unequal_norms(prune, exclude_self):
    g = torch.Generator().manual_seed(0)
    V, r = 300, 6
    scale = torch.arange(1, V + 1, dtype=torch.float32) ** -0.5  # Zipf-like norms: pruning skips most rows
    left = torch.randn(V, r, generator=g) * scale[torch.randperm(V, generator=g)][:, None]
    right = torch.randn(r, V, generator=g) * scale[torch.randperm(V, generator=g)][None, :]
    keep = torch.rand(V, generator=g) > 0.1
    for k, block in ((1, 7), (10, 3), (50, 64), (400, 1000)):
        got = top_pairs(left, right, k, exclude_self=exclude_self, keep=keep, block=block, prune=prune)
        assert_same_pairs(got, whole_table_top(left, right, k, exclude_self, keep), exact=False)


@pytest.mark.parametrize("seed", range(12))
def test_pruned_top_pairs_keep_every_tie_at_the_threshold_in_row_then_column_order(seed):
    """Small integer factors: many exactly equal values (products of small integers add up exactly in any
    order), rows of equal and of different norms; ties at the k-th value must go to the lowest row, then
    column, although rows are visited by norm (a large-norm row is visited before a smaller-index tie)."""
    g = torch.Generator().manual_seed(seed)
    V, r = 40, 3
    left = torch.randint(-2, 3, (V, r), generator=g).float()
    right = torch.randint(-2, 3, (r, V), generator=g).float()
    left[torch.randperm(V, generator=g)[:5]] *= 3  # a few large-norm rows, in random places
    keep = torch.rand(V, generator=g) > 0.3 if seed % 2 else None
    for k in (1, 5, 17, 60, 2000):  # the last: more than the number of entries
        for exclude_self in (False, True):
            for block in (1, 4, 1024):
                want = whole_table_top(left, right, k, exclude_self, keep)
                for prune in (True, False):
                    assert_same_pairs(top_pairs(left, right, k, exclude_self=exclude_self, keep=keep, block=block,
                                                prune=prune), want)


def test_a_row_whose_bound_equals_the_threshold_is_still_visited():
    """Row 7 (norm 6.25) is visited first and sets the threshold 25 (k = 1); row 2 = (3, 4) can reach exactly
    ‖(3, 4)‖ · max column norm 5 = 25, a tie it wins by its smaller index."""
    left = torch.zeros(9, 2)
    left[7] = torch.tensor([0.0, 6.25])
    left[2] = torch.tensor([3.0, 4.0])
    right = torch.zeros(2, 9)
    right[:, 4] = torch.tensor([3.0, 4.0])
    want = whole_table_top(left, right, 1)
    assert (want[0].tolist(), want[1].tolist(), want[2].tolist()) == ([2], [4], [25.0])
    assert_same_pairs(top_pairs(left, right, 1, block=1), want)


def test_the_bound_allows_for_rounding_in_the_products():
    """A float32 product v·v can round above ‖v‖² (the exact Cauchy–Schwarz bound): the rounded value, set as
    the threshold by a larger-norm row with the same product, must not stop the search before row 1 = v ties it."""
    rng = np.random.default_rng(0)
    for _ in range(20000):
        v = torch.from_numpy(rng.standard_normal(16).astype(np.float32))
        left = torch.zeros(4, 16)
        left[1] = v
        right = torch.zeros(16, 4)
        right[:, 2] = v
        exact = float(np.dot(v.double().numpy(), v.double().numpy()))
        value = float((left @ right)[1, 2])
        if value <= exact:
            continue
        # row 3: v with one entry moved by an ulp away from zero (a larger norm) and the same rounded product
        for j in range(16):
            w = v.clone()
            w[j] = float(np.nextafter(np.float32(v[j].item()), np.float32(np.copysign(np.inf, v[j].item()))))
            left[3] = w
            if float((left @ right)[3, 2]) == value and float(w.double().norm()) > float(v.double().norm()):
                want = whole_table_top(left, right, 1)
                assert want[0].tolist() == [1]  # the tie goes to the smaller row
                assert_same_pairs(top_pairs(left, right, 1, block=1), want)
                return
    pytest.fail("no rounding example found")


def test_per_row_mode_is_unchanged_by_the_block_cap(monkeypatch):
    import circuits.interp.circuit_pairs as cp

    g = torch.Generator().manual_seed(3)
    left, right = torch.randn(50, 4, generator=g), torch.randn(4, 50, generator=g)
    whole = top_pairs(left, right, 3, per_row=True, exclude_self=True)
    monkeypatch.setattr(cp, "MAX_BLOCK_ENTRIES", 120)  # 2 rows of 50 columns per block
    # the same pairs; the values to float rounding (a matrix product's last bit can depend on its shape)
    assert_same_pairs(top_pairs(left, right, 3, per_row=True, exclude_self=True), whole, exact=False)


# --- rank table: streamed, summarised, written -------------------------------------------------------------

def rank_table_before(model, ds, split, exclude_seen=False):
    """The rank table as it was computed before streaming (whole-block logits, one long table re-sorted)."""
    from circuits.interp.attribution import component_logits, residual_components, target_ranks, with_groups
    from circuits.model import strip_left_padding
    from circuits.scoring.metrics import mask_rows

    frames = []
    for lo in range(0, len(split), 4):
        rows = np.arange(lo, min(lo + 4, len(split)))
        history, times = strip_left_padding(torch.from_numpy(split.history[rows]),
                                            torch.from_numpy(split.history_times[rows]))
        stack, labels = with_groups(*residual_components(model, history, times=times), model.cfg.n_layers)
        logits = component_logits(model, stack)
        target = torch.from_numpy(split.target[rows])
        target_logit = logits.gather(-1, target.expand(len(labels), -1)[..., None])[..., 0]
        if exclude_seen:
            for c in range(len(labels)):
                mask_rows(logits[c], split.seen_ptr, split.seen_items, rows)
        ranks = target_ranks(logits, target)
        frames.append(pd.DataFrame({
            "user_id": np.tile(ds.user_ids[split.users[rows]], len(labels)),
            "component": np.repeat(labels, len(rows)),
            "target_logit": target_logit.reshape(-1).numpy(),
            "rank": ranks.reshape(-1).numpy(),
        }))
    table = pd.concat(frames, ignore_index=True)
    order = {c: i for i, c in enumerate(labels)}
    user_row = {u: i for i, u in enumerate(ds.user_ids[split.users])}
    keys = np.lexsort((table["user_id"].map(user_row).to_numpy(), table["component"].map(order).to_numpy()))
    return table.iloc[keys].reset_index(drop=True)


@pytest.fixture(scope="module")
def small_ranked():
    """A random log of 30 users over 15 items (repeats included) and a 2-layer model with two unscorable items."""
    from circuits.data.sequences import build_dataset

    rng = np.random.default_rng(4)
    rows = [(f"u{u}", str(i), float(t)) for u in range(30)
            for t, i in enumerate(rng.integers(1, 16, size=rng.integers(2, 9)))]
    ds = build_dataset(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), {}, "t")
    model = build_model(ModelConfig(d_vocab=ds.d_vocab, n_ctx=5, n_layers=2, n_heads=2, d_model=8, d_head=4), 1).eval()
    model.unseen[[3, 7]] = True
    return model, ds


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_rank_table_is_what_it_was_before_streaming_and_the_blocks_make_it_up(small_ranked, exclude_seen, monkeypatch):
    import circuits.interp.ranks as ranks

    model, ds = small_ranked
    split = ds.eval_split("test", 5)
    table = ranks.rank_table(model, ds, split, exclude_seen)
    assert len(table) == 11 * len(split) and (table["rank"] == ds.n_items).any()  # unscorable targets rank last
    pd.testing.assert_frame_equal(table, rank_table_before(model, ds, split, exclude_seen), check_exact=True)
    monkeypatch.setattr(ranks, "MAX_USERS_PER_BLOCK", 3)
    blocks = list(ranks.iter_rank_blocks(model, ds, split, exclude_seen))
    assert len(blocks) == -(-len(split) // 3) and all(len(b) == 11 * 3 for b in blocks[:-1])
    streamed = pd.concat(blocks, ignore_index=True)
    labels = list(dict.fromkeys(table["component"]))
    user_row = {u: i for i, u in enumerate(ds.user_ids[split.users])}
    keys = np.lexsort((streamed["user_id"].map(user_row), streamed["component"].map(labels.index)))
    pd.testing.assert_frame_equal(streamed.iloc[keys].reset_index(drop=True), table, check_exact=True)


def test_summary_from_the_rank_arrays_equals_rank_summary_of_the_table(small_ranked):
    from circuits.interp.ranks import rank_arrays, rank_summary

    model, ds = small_ranked
    arrays = rank_arrays(model, ds, ds.eval_split("valid", 5))
    want = rank_summary(arrays.frame())
    got = arrays.summary()
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.attrs == want.attrs and "share_L0+L1_better_than_L0" in got.attrs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.helpers import tiny_journeys, train_tiny

    root = tmp_path_factory.mktemp("scale")
    return train_tiny(tiny_journeys(root / "data", n_users=60, max_length=12), root / "L2", 2)


def test_decompose_all_writes_the_rank_table_to_one_file_or_a_folder_of_parts(tiny_run, tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    from circuits import decompose
    from circuits.errors import UserError
    from circuits.interp.ranks import rank_table
    from circuits.runs import load_run

    run = load_run(tiny_run)
    ds = run.dataset()
    want = rank_table(run.model, ds, ds.eval_split("test", run.model.cfg.n_ctx))
    monkeypatch.setattr(decompose, "ROWS_PER_PART", 97)  # several row groups / parts, split mid-component
    n_parts = -(-len(want) // 97)
    for out in (tmp_path / "ranks.parquet", tmp_path / "ranks"):
        for _ in range(2):  # the second time over the first output
            assert decompose.main([str(tiny_run), "--all", "--out", str(out), "--json"]) == 0
        pd.testing.assert_frame_equal(pd.read_parquet(out), want, check_exact=True)
        meta = json.loads(pq.read_schema(out if out.is_file() else out / "part-00000.parquet").metadata[b"circuits"])
        assert meta["users"] == meta["eligible_users"] == len(want) // 11 and meta["eval_users"] == 0
        assert not out.with_name(out.name + ".tmp").exists() and not out.with_name(out.name + ".old").exists()
    assert pq.ParquetFile(tmp_path / "ranks.parquet").num_row_groups == n_parts
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == [f"part-{i:05d}.parquet" for i in range(n_parts)]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="other files"):
        decompose.main([str(tiny_run), "--all", "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_eval_users_sample_gives_exactly_those_users_rows_of_the_full_table(tiny_run, tmp_path, capsys):
    import pyarrow.parquet as pq

    from circuits import decompose
    from circuits.data.sequences import sample_eval_users
    from circuits.runs import load_run

    run = load_run(tiny_run)
    ds = run.dataset()
    assert decompose.main([str(tiny_run), "--all", "--out", str(tmp_path / "all.parquet")]) == 0
    capsys.readouterr()
    assert decompose.main([str(tiny_run), "--all", "--eval-users", "7", "--eval-seed", "3", "--out",
                           str(tmp_path / "some.parquet"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    full, some = pd.read_parquet(tmp_path / "all.parquet"), pd.read_parquet(tmp_path / "some.parquet")
    users = ds.user_ids[sample_eval_users(ds, 7, 3)]
    assert len(set(users)) == 7 and set(some["user_id"]) == set(users)
    want = full[full["user_id"].isin(users)].reset_index(drop=True)
    # the same rows in the same order; the logits to float rounding (a block's padding width and matrix shapes
    # depend on which users share it)
    pd.testing.assert_frame_equal(some.drop(columns="target_logit"), want.drop(columns="target_logit"), check_exact=True)
    np.testing.assert_allclose(some["target_logit"], want["target_logit"], rtol=1e-5, atol=1e-6)
    meta = json.loads(pq.read_schema(tmp_path / "some.parquet").metadata[b"circuits"])
    assert (meta["eval_users"], meta["eval_seed"], meta["users"]) == (7, 3, 7) == (
        printed["eval_users"], printed["eval_seed"], printed["users"])
    assert meta["eligible_users"] == printed["eligible_users"] == len(full) // 11 > 7


def test_frequent_items_are_the_most_frequent_with_ties_by_index():
    from circuits.interp.circuit_pairs import frequent_items

    counts = np.array([99, 5, 7, 7, 0, 12, 7, 3])  # index 0 is padding, never kept
    assert frequent_items(counts) is None and frequent_items(counts, 0, 7) is None
    assert np.flatnonzero(frequent_items(counts, 4)).tolist() == [1, 2, 3, 5, 6]
    assert np.flatnonzero(frequent_items(counts, 4, 3)).tolist() == [2, 3, 5]  # 12, then the first two 7s
    assert np.flatnonzero(frequent_items(counts, 0, 4)).tolist() == [2, 3, 5, 6]


def test_pair_table_among_the_most_frequent_items(tiny_run):
    from circuits.interp.circuit_pairs import circuit_factors, pair_table
    from circuits.runs import load_run

    run = load_run(tiny_run)
    ds = run.dataset()
    counts = ds.train_counts()
    ranked = sorted(range(1, ds.d_vocab), key=lambda i: (-counts[i], i))[:12]
    keep = torch.zeros(ds.d_vocab, dtype=torch.bool)
    keep[ranked] = True
    left, right = circuit_factors(run.model, "OV:L1H0")
    with torch.no_grad():
        want = whole_table_top(left, right, 20, keep=keep)
    got = pair_table(run.model, ds, "OV:L1H0", top=20, max_items=12)
    assert list(got["source_id"]) == list(ds.item_ids[want[0]]) and list(got["target_id"]) == list(ds.item_ids[want[1]])


def test_residual_only_stops_forward_passes_at_the_residual_stream_and_restores_them(small_ranked):
    from circuits.interp.attribution import residual_components
    from circuits.interp.ranks import residual_only

    model, _ = small_ranked
    x = torch.tensor([[1, 4, 2, 9]])
    whole = residual_components(model, x)
    with residual_only(model):
        assert model(x).shape == (1, 4, model.cfg.d_model)
        inside = residual_components(model, x)
    torch.testing.assert_close(inside[0], whole[0], rtol=0, atol=0)
    assert inside[1] == whole[1]
    with pytest.raises(RuntimeError), residual_only(model):
        raise RuntimeError
    assert model(x).shape == (1, 4, model.cfg.d_vocab)
