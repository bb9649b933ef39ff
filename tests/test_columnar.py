"""The out-of-core preprocessing (circuits.data.columnar) gives exactly what the pandas path gives."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuits.data.columnar import columnar_arrays, is_partitioned, partition_files
from circuits.data.readers import LogSpec, read_log
from circuits.data.sequences import Preprocess, build_dataset
from circuits.errors import UserError


def _log(n_rows: int = 600, n_users: int = 40, n_items: int = 30, seed: int = 0, ids: str = "str") -> pd.DataFrame:
    """A log with many equal timestamps (per user and overall), users and items in no particular order."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    items = rng.integers(0, n_items, n_rows)
    times = rng.integers(0, 25, n_rows)  # few distinct values: ties everywhere
    if ids == "str":
        user, item = [f"u{x:02d}" for x in users], [f"i{x}" for x in items]  # "i10" < "i2" as strings
    elif ids == "mixed":
        user, item = [f"u{x}" for x in users], [str(x) if x % 3 else f"x{x}" for x in items]
    else:
        user, item = (users * 7 + 3).astype(np.int64), (items * 13 + 1).astype(np.int64)  # numeric sort matters
    return pd.DataFrame({"user_id": user, "item_id": item, "timestamp": times.astype(np.int64)})


def _titles(df: pd.DataFrame, extra: int = 0) -> pd.DataFrame:
    """Titles for most of the log's items (some left out) and `extra` catalogue items without interactions."""
    ids = sorted(set(map(str, df["item_id"])))[::-1][1:]
    ids += [f"{900 + k}" for k in range(extra)]
    return pd.DataFrame({"item_id": ids, "title": [f"Title of {i}" for i in ids]})


def _check(spec: LogSpec, pre: Preprocess, tmp_path: Path, reference: LogSpec | None = None) -> dict:
    """columnar_arrays(spec) == build_dataset(*read_log(reference or spec)), array for array."""
    ds = build_dataset(*read_log(reference or spec), name="log", pre=pre)
    out_dir = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    got = columnar_arrays(spec, pre, out_dir, memory_limit="256MB", progress=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["items.npy", "offsets.npy", "timestamps.npy"]  # tmp gone
    offsets, items, times = (np.load(out_dir / f) for f in ("offsets.npy", "items.npy", "timestamps.npy"))
    assert (offsets.dtype, items.dtype, times.dtype) == (np.int64, np.int64, np.float64)
    np.testing.assert_array_equal(offsets, ds.offsets)
    np.testing.assert_array_equal(items, ds.items)
    np.testing.assert_array_equal(times, ds.timestamps)
    for key in ("item_ids", "titles", "user_ids"):
        assert got[key].dtype == object
        np.testing.assert_array_equal(got[key], getattr(ds, key))
    assert got["info"] == ds.info
    user = np.repeat(np.arange(ds.n_users), ds.lengths)
    pairs = user * ds.d_vocab + ds.items
    assert got["has_repeats"] == (len(np.unique(pairs)) < len(pairs))
    return got


def _csv(df: pd.DataFrame, path: Path, sep: str = ",") -> Path:
    text = df.to_csv(sep=sep, index=False)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("tie_break", ["file", "item"])
def test_csv_string_ids_equal_timestamps(tmp_path: Path, tie_break: str) -> None:
    path = _csv(_log(), tmp_path / "log.csv")
    _check(LogSpec(str(path)), Preprocess(tie_break=tie_break), tmp_path)


def test_tsv_gz_with_titles_beside(tmp_path: Path) -> None:
    df = _log(seed=1)
    _csv(df, tmp_path / "interactions.tsv.gz", sep="\t")
    _csv(_titles(df), tmp_path / "items.tsv", sep="\t")
    got = _check(LogSpec(str(tmp_path)), Preprocess(tie_break="item"), tmp_path)
    assert got["titles"][1].startswith(("Title of", "item "))


def test_parquet_file_numeric_ids_sort_numerically(tmp_path: Path) -> None:
    df = _log(seed=2, ids="int")
    df.to_parquet(tmp_path / "log.parquet", index=False)
    got = _check(LogSpec(str(tmp_path / "log.parquet")), Preprocess(), tmp_path)
    numbers = got["item_ids"][1:].astype(np.int64)
    assert (np.diff(numbers) > 0).all() and not (np.sort(got["item_ids"][1:]) == got["item_ids"][1:]).all()


def test_string_and_mixed_ids_sort_as_strings(tmp_path: Path) -> None:
    for kind in ("str", "mixed"):
        path = _csv(_log(seed=3, ids=kind), tmp_path / f"{kind}.csv")
        got = _check(LogSpec(str(path)), Preprocess(), tmp_path)
        assert list(got["item_ids"][1:]) == sorted(got["item_ids"][1:])


def test_numeric_strings_in_csv_sort_numerically(tmp_path: Path) -> None:
    df = _log(seed=4, ids="int")
    path = _csv(df, tmp_path / "log.csv")
    got = _check(LogSpec(str(path)), Preprocess(tie_break="item"), tmp_path)
    assert (np.diff(got["item_ids"][1:].astype(np.int64)) > 0).all()


def _partitioned(df: pd.DataFrame, root: Path, cuts: list[int]) -> None:
    """`root/interactions/part-*.parquet` (the rows of df cut at `cuts`, names out of creation order) + items."""
    (root / "interactions").mkdir(parents=True)
    bounds = [0, *cuts, len(df)]
    for k in reversed(range(len(bounds) - 1)):  # written last-first: the order must come from the names
        pq.write_table(pa.Table.from_pandas(df.iloc[bounds[k] : bounds[k + 1]], preserve_index=False),
                       root / "interactions" / f"part-{k:05d}.parquet", row_group_size=50)


@pytest.mark.parametrize("ids", ["int", "str"])
def test_partitioned_parquet_equals_the_concatenation(tmp_path: Path, ids: str) -> None:
    df = _log(n_rows=900, seed=5, ids=ids)
    root = tmp_path / "data"
    _partitioned(df, root, [1, 300, 301, 640])
    _titles(df, extra=3).to_parquet(root / "items.parquet", index=False)
    assert is_partitioned(root) and is_partitioned(root / "interactions") and not is_partitioned(tmp_path)
    assert [p.name for p in partition_files(root)] == [f"part-{k:05d}.parquet" for k in range(5)]
    whole = tmp_path / "whole"
    whole.mkdir()
    df.to_parquet(whole / "interactions.parquet", index=False)
    _titles(df, extra=3).to_parquet(whole / "items.parquet", index=False)
    for pre in (Preprocess(), Preprocess(tie_break="item", pool="catalogue")):
        _check(LogSpec(str(root)), pre, tmp_path, reference=LogSpec(str(whole)))
    # a bare folder of partitions takes its items from beside it
    _check(LogSpec(str(root / "interactions")), Preprocess(pool="catalogue"), tmp_path,
           reference=LogSpec(str(whole)))


@pytest.mark.parametrize("k", [2, 3])
def test_kcore(tmp_path: Path, k: int) -> None:
    path = _csv(_log(n_rows=300, n_users=80, n_items=80, seed=6), tmp_path / "log.csv")  # 2 and 4 rounds
    got = _check(LogSpec(str(path)), Preprocess(kcore=k), tmp_path)
    assert got["info"]["rows_kept"] < got["info"]["rows_read"]


def test_kcore_parquet_numeric_ids(tmp_path: Path) -> None:
    _log(n_rows=400, n_users=70, n_items=60, seed=7, ids="int").to_parquet(tmp_path / "log.parquet", index=False)
    _check(LogSpec(str(tmp_path / "log.parquet")), Preprocess(kcore=3, tie_break="item"), tmp_path)


def test_pool_catalogue(tmp_path: Path) -> None:
    df = _log(seed=8, ids="int")
    _csv(df, tmp_path / "interactions.csv")
    _titles(df, extra=5).to_parquet(tmp_path / "items.parquet", index=False)
    got = _check(LogSpec(str(tmp_path)), Preprocess(pool="catalogue"), tmp_path)
    assert "904" in set(got["item_ids"])


@pytest.mark.parametrize("kcore", [0, 2])
def test_cold_items(tmp_path: Path, kcore: int) -> None:
    path = _csv(_log(n_rows=500, n_users=80, seed=9), tmp_path / "log.csv")
    for seed in (0, 3):
        got = _check(LogSpec(str(path)), Preprocess(kcore=kcore, cold_items=0.2, cold_seed=seed), tmp_path)
        assert got["info"]["cold_items_held_out"] > 0


def test_iso_timestamps(tmp_path: Path) -> None:
    df = _log(n_rows=200, seed=10)
    base = pd.Timestamp("2021-03-04T05:06:07Z")
    df["timestamp"] = [(base + pd.Timedelta(seconds=int(s) * 3601)).isoformat() for s in df["timestamp"]]
    df.loc[5, "timestamp"] = "2021-03-04 07:00:00.250+02:00"  # other ISO spellings
    df.loc[9, "timestamp"] = "2021-03-05"
    path = _csv(df, tmp_path / "log.csv")
    _check(LogSpec(str(path)), Preprocess(tie_break="item"), tmp_path)


def test_float_times_other_column_names_no_repeats(tmp_path: Path) -> None:
    df = _log(n_rows=150, seed=11).drop_duplicates(["user_id", "item_id"])
    df = df.rename(columns={"user_id": "session", "timestamp": "when"})
    df["when"] = df["when"] + 0.5
    df.to_parquet(tmp_path / "log.parquet", index=False)
    spec = LogSpec(str(tmp_path / "log.parquet"), user_col="session", time_col="when")
    assert _check(spec, Preprocess(), tmp_path)["has_repeats"] is False


@pytest.mark.parametrize("unit,tz", [("ms", None), ("us", "UTC"), ("ns", None)])
def test_parquet_datetime_timestamps(tmp_path: Path, unit: str, tz: str | None) -> None:
    df = _log(n_rows=120, seed=15)
    seconds = pa.array(1_600_000_000 + df["timestamp"].to_numpy() * 3600, pa.timestamp("s"))
    table = pa.table({"user_id": df["user_id"], "item_id": df["item_id"],
                      "timestamp": seconds.cast(pa.timestamp(unit, tz))})
    pq.write_table(table, tmp_path / "log.parquet")
    _check(LogSpec(str(tmp_path / "log.parquet")), Preprocess(), tmp_path)


def _error(spec: LogSpec, tmp_path: Path) -> str:
    with pytest.raises(UserError) as pandas_error:
        read_log(spec)
    with pytest.raises(UserError) as ours:
        columnar_arrays(spec, Preprocess(), tmp_path / "err", progress=False)
    assert "\n" not in str(ours.value)
    assert str(ours.value) == str(pandas_error.value)
    return str(ours.value)


def test_errors_match_the_pandas_path(tmp_path: Path) -> None:
    df = _log(n_rows=50, seed=12)
    path = _csv(df.drop(columns=["item_id"]), tmp_path / "noitem.csv")
    assert "no item column" in _error(LogSpec(str(path)), tmp_path)
    path = _csv(df, tmp_path / "log.csv")
    assert "no column 'stamp'" in _error(LogSpec(str(path), time_col="stamp"), tmp_path)
    bad = df.copy()
    bad.loc[[3, 7], "user_id"] = ""
    assert "2 rows have an empty" in _error(LogSpec(str(_csv(bad, tmp_path / "empty.csv"))), tmp_path)
    bad = df.astype({"timestamp": str})
    bad.loc[20, "timestamp"], bad.loc[30, "timestamp"] = "soon", "later"
    assert "(e.g. 'soon')" in _error(LogSpec(str(_csv(bad, tmp_path / "time.csv"))), tmp_path)
    assert "no rows" in _error(LogSpec(str(_csv(df.iloc[:0], tmp_path / "header.csv"))), tmp_path)


@pytest.mark.filterwarnings("ignore:Parsing integer or float values with a format")
def test_errors_on_parquet(tmp_path: Path) -> None:
    df = _log(n_rows=50, seed=13)
    df.loc[4, "item_id"] = ""
    df.to_parquet(tmp_path / "log.parquet", index=False)
    assert "1 rows have an empty" in _error(LogSpec(str(tmp_path / "log.parquet")), tmp_path)
    root = tmp_path / "parts"
    _partitioned(_log(n_rows=50, seed=13).drop(columns=["timestamp"]), root, [20])
    with pytest.raises(UserError, match="no time column"):
        columnar_arrays(LogSpec(str(root)), Preprocess(), tmp_path / "err", progress=False)
    nulls = pa.table({"user_id": ["a", "b", "a"], "item_id": [1, 2, 3], "timestamp": pa.array([5, None, 7])})
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    assert "non-numeric timestamps (e.g. np.float64(nan))" in _error(LogSpec(str(tmp_path / "nulls.parquet")), tmp_path)
    floats = _log(n_rows=50, seed=13, ids="int").astype({"item_id": float})
    floats.to_parquet(tmp_path / "float.parquet", index=False)
    with pytest.raises(UserError, match="ids must be integers or strings"):
        columnar_arrays(LogSpec(str(tmp_path / "float.parquet")), Preprocess(), tmp_path / "err", progress=False)


def test_kcore_leaving_nothing(tmp_path: Path) -> None:
    path = _csv(_log(n_rows=40, n_users=30, n_items=30, seed=14), tmp_path / "log.csv")
    with pytest.raises(UserError, match=r"no interactions left after 9-core filtering \(of 40\)"):
        columnar_arrays(LogSpec(str(path)), Preprocess(kcore=9), tmp_path / "err", progress=False)


def test_many_small_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches and chunks of a few rows: results are scattered by file position, whatever order they come in."""
    import circuits.data.columnar as columnar

    monkeypatch.setattr(columnar, "BATCH_ROWS", 16)
    monkeypatch.setattr(columnar, "CHUNK", 8)
    df = _log(n_rows=400, seed=16)
    root = tmp_path / "data"
    _partitioned(df, root, [100, 250])
    whole = tmp_path / "whole.parquet"
    df.to_parquet(whole, index=False)
    _check(LogSpec(str(root)), Preprocess(kcore=2, cold_items=0.2), tmp_path, reference=LogSpec(str(whole)))
    text = df.astype({"timestamp": str})
    text.loc[333, "timestamp"] = "2020-01-01T00:00:00Z"  # one date: all are parsed as dates, "3" is not one
    text.loc[377, "timestamp"] = "x"
    path = _csv(text, tmp_path / "log.csv")
    assert f"(e.g. {text.loc[333, 'timestamp']!r})" in _error(LogSpec(str(path)), tmp_path)


def test_csv_dialect_like_pandas(tmp_path: Path) -> None:
    """BOM, CRLF, quoted delimiters, doubled quotes and newlines in quotes, blank lines, spaces kept in ids."""
    path = tmp_path / "log.csv"
    path.write_bytes("\ufeffuser_id,item_id,timestamp\r\n a,\"x,1\",3\r\n\r\nb,\"say \"\"hi\"\"\",2\r\n   \r\n"
                     "a,y ,3\r\nb,\"two\nlines\",1\r\na,x,2\r\n".encode())
    got = _check(LogSpec(str(path)), Preprocess(), tmp_path)
    assert set(got["item_ids"]) == {"<pad>", "x,1", 'say "hi"', "y ", "two\nlines", "x"}


@pytest.mark.parametrize("tie_break", ["file", "item"])
def test_presorted_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tie_break: str) -> None:
    """A log already in (user, time) order (users grouped, ties unordered by item), and one repeat only, in the
    last user: the sort is skipped where it may be, and the repeat is found across chunks of a few rows."""
    import circuits.data.columnar as columnar

    monkeypatch.setattr(columnar, "CHUNK", 8)
    df = _log(n_rows=300, seed=17).drop_duplicates(["user_id", "item_id"])
    df = df.sort_values(["user_id", "timestamp"], kind="stable").iloc[::-1]  # users last-first, times descending
    df["timestamp"] = -df["timestamp"]
    path = _csv(df, tmp_path / "unique.csv")
    assert _check(LogSpec(str(path)), Preprocess(tie_break=tie_break), tmp_path)["has_repeats"] is False
    last = df[df["user_id"] == df["user_id"].iloc[-1]]
    repeat = last.iloc[[0]].assign(timestamp=last["timestamp"].iloc[-1])
    path = _csv(pd.concat([df, repeat]), tmp_path / "repeat.csv")
    assert _check(LogSpec(str(path)), Preprocess(tie_break=tie_break), tmp_path)["has_repeats"] is True


def test_other_sources(tmp_path: Path) -> None:
    """MovieLens-latest folders, JSON-lines logs (done by the pandas path), an explicit items file."""
    df = _log(n_rows=200, seed=18, ids="int")
    ml = tmp_path / "ml-latest"
    ml.mkdir()
    _csv(df.rename(columns={"user_id": "userId", "item_id": "movieId"}), ml / "ratings.csv")
    _csv(_titles(df).rename(columns={"item_id": "movieId"}), ml / "movies.csv")
    assert _check(LogSpec(str(ml)), Preprocess(pool="catalogue"), tmp_path)["titles"][1].startswith("Title of")
    js = tmp_path / "js"
    js.mkdir()
    df.to_json(js / "interactions.jsonl", orient="records", lines=True)
    _check(LogSpec(str(js)), Preprocess(kcore=2), tmp_path)
    meta = _titles(df, extra=2).rename(columns={"title": "name"})
    _csv(meta, tmp_path / "meta.csv")
    path = _csv(df, tmp_path / "log.csv")
    spec = LogSpec(str(path), items_path=str(tmp_path / "meta.csv"), title_col="name")
    _check(spec, Preprocess(pool="catalogue", tie_break="item"), tmp_path)
    assert "no column 'title' for title" in _error(LogSpec(str(path), items_path=str(tmp_path / "meta.csv"),
                                                           title_col="title"), tmp_path)
