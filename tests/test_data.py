import gzip
import json
import os

import numpy as np
import pandas as pd
import pytest

from circuits.data import load_dataset
from circuits.data.readers import LogSpec, read_log
from circuits.data.sequences import Preprocess, build_dataset, kcore_filter
from circuits.errors import UserError

LOG = pd.DataFrame(
    {
        "uid": ["b", "a", "a", "b", "a", "a", "b", "b"],
        "doc": ["10", "2", "10", "7", "2", "7", "2", "10"],
        "ts": [5, 3, 1, 5, 3, 9, 6, 7],
    }
)


def write_log(path, df=LOG):
    if path.suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, sep="\t" if ".tsv" in path.name else ",", index=False)
    return path


@pytest.mark.parametrize("name", ["log.csv", "log.tsv", "log.csv.gz", "log.parquet"])
def test_tables_in_every_format_read_the_same(tmp_path, name):
    path = write_log(tmp_path / name)
    ds = load_dataset(str(path), user_col="uid", item_col="doc", time_col="ts")
    assert list(ds.item_ids) == ["<pad>", "2", "7", "10"]  # numeric ids in numeric order, 0 = padding
    assert list(ds.user_ids) == ["b", "a"]  # order of first appearance
    # user a: ts 1 (10), 3 (2), 3 (2), 9 (7) -> equal timestamps keep file order
    a = ds.sequence("a")
    assert a["item_id"].tolist() == ["10", "2", "2", "7"]
    assert a["split"].tolist() == ["train", "train", "valid", "test"]


def test_tie_break_is_file_order_or_item_id(tmp_path):
    df = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["9", "3", "5", "1"], "timestamp": [2, 2, 2, 1]})
    path = write_log(tmp_path / "t.csv", df)
    assert load_dataset(str(path)).sequence("u")["item_id"].tolist() == ["1", "9", "3", "5"]
    assert load_dataset(str(path), tie_break="item").sequence("u")["item_id"].tolist() == ["1", "3", "5", "9"]


def test_titles_from_jsonl_and_iso_timestamps(tmp_path):
    df = pd.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["x", "y", "z"],
                       "timestamp": ["2024-01-02T00:00:00", "2024-01-01", "2024-01-03"]})
    path = write_log(tmp_path / "log.csv", df)
    meta = tmp_path / "items.jsonl.gz"
    with gzip.open(meta, "wt") as f:
        for i, t in [("x", "Ex"), ("y", "Why")]:
            f.write(json.dumps({"item_id": i, "title": t}) + "\n")
    ds = load_dataset(str(path), items=str(meta))
    seq = ds.sequence("u")
    assert seq["title"].tolist() == ["Why", "Ex", "item z"]


def test_movielens_layouts(tmp_path):
    ml100 = tmp_path / "ml-100k"
    ml100.mkdir()
    (ml100 / "u.data").write_text("1\t5\t3\t100\n1\t6\t4\t50\n2\t5\t1\t10\n")
    (ml100 / "u.item").write_bytes("5|Caf\xe9 (1995)|x\n6|Six (1996)|y\n".encode("latin-1"))
    ds = load_dataset(str(ml100))
    assert ds.sequence("1")["title"].tolist() == ["Six (1996)", "Café (1995)"]
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::5::3::100\n1::6::4::50\n")
    (ml1m / "movies.dat").write_bytes("5::Toy (1995)::A\n6::Sixth::B\n".encode("latin-1"))
    assert load_dataset(str(ml1m)).sequence("1")["title"].tolist() == ["Sixth", "Toy (1995)"]
    latest = tmp_path / "latest"
    latest.mkdir()
    (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n7,1,4.0,20\n7,2,4.0,10\n")
    (latest / "movies.csv").write_text("movieId,title,genres\n1,One,x\n2,Two,y\n")
    assert load_dataset(str(latest)).sequence("7")["title"].tolist() == ["Two", "One"]


def test_kcore_filter_is_repeated_until_stable():
    df = pd.DataFrame({"user": list("aaabbbcc"), "item": list("xyzxyzxq"), "timestamp": np.arange(8.0)})
    out = kcore_filter(df, 2)
    # q has 1 user -> dropped; then c has 1 item -> dropped; x,y,z keep 2 users each
    assert set(out["user"]) == {"a", "b"} and set(out["item"]) == {"x", "y", "z"}


def test_split_windows_and_seen_sets():
    df = pd.DataFrame({"user": ["u"] * 6 + ["v"] * 2, "item": ["1", "2", "3", "4", "5", "6", "1", "2"],
                       "timestamp": np.arange(8.0)})
    ds = build_dataset(df, {}, "t")
    x, y, t = ds.train_windows(n_ctx=2)
    # u's training part is 1 2 3 4 -> inputs [2, 3], targets [3, 4]; v (< 3 items) trains on 1 -> 2
    assert x.tolist() == [[2, 3], [0, 1]] and y.tolist() == [[3, 4], [0, 2]]
    assert t.tolist() == [[1.0, 2.0], [0.0, 6.0]]  # the inputs' own timestamps, 0 under padding
    x, y, t = ds.train_windows(n_ctx=5)
    assert x.tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 1]]
    assert t.tolist() == [[0.0, 0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0, 6.0]]
    valid, test = ds.eval_split("valid", 3), ds.eval_split("test", 3)
    assert valid.history.tolist() == [[2, 3, 4]] and valid.target.tolist() == [5]
    assert test.history.tolist() == [[3, 4, 5]] and test.target.tolist() == [6]
    assert valid.history_times.tolist() == [[1.0, 2.0, 3.0]] and test.history_times.tolist() == [[2.0, 3.0, 4.0]]
    wide = ds.eval_split("test", 6)
    assert wide.history.tolist() == [[0, 1, 2, 3, 4, 5]] and wide.history_times.tolist() == [[0, 0, 1, 2, 3, 4]]
    assert test.seen_items.tolist() == [1, 2, 3, 4, 5]  # the whole history, not only the window
    assert ds.train_counts().tolist() == [0, 2, 2, 1, 1, 0, 0]


def test_preprocessing_is_cached_and_fingerprinted(tmp_path, monkeypatch):
    import circuits.data.cache as cache

    def entries():
        return {p for p in cache.cache_dir().glob("*/meta.json")}

    path = write_log(tmp_path / "log.csv")
    cols = {"user_col": "uid", "item_col": "doc", "time_col": "ts"}
    before = entries()
    a = load_dataset(str(path), **cols)
    assert len(entries() - before) == 1  # the result was written to the cache
    with monkeypatch.context() as m:  # a second load must not read the log at all
        m.setattr(cache, "read_log", lambda spec: pytest.fail("read the log again despite the cache"))
        b = load_dataset(str(path), **cols)
    assert b.fingerprint == a.fingerprint and np.array_equal(b.items, a.items)
    assert list(b.item_ids) == list(a.item_ids) and np.array_equal(b.timestamps, a.timestamps)
    # other options, or other file contents, are other entries
    c = load_dataset(str(path), tie_break="item", **cols)
    assert c.fingerprint != a.fingerprint
    write_log(path, LOG.assign(ts=LOG["ts"] + 1))
    d = load_dataset(str(path), **cols)
    assert np.array_equal(d.timestamps, a.timestamps + 1)
    assert len(entries() - before) == 3


def test_two_builders_of_one_cache_entry_do_not_collide(tmp_path, monkeypatch):
    """Two trainings started at once on a new log build the same entry: here the second starts and finishes while
    the first is about to rename its folder into place. Both get the dataset, one entry is left, no folder of either
    builder."""
    import circuits.data.cache as cache

    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    path, cols = write_log(tmp_path / "log.csv"), {"user_col": "uid", "item_col": "doc", "time_col": "ts"}
    finish, second = cache._finish_entry, []

    def finish_after_another_builder(tmp, *args):
        if not second:
            second.append(None)
            second[0] = load_dataset(str(path), **cols)  # the other process, from start to end
        finish(tmp, *args)

    monkeypatch.setattr(cache, "_finish_entry", finish_after_another_builder)
    first = load_dataset(str(path), **cols)
    assert first.fingerprint == second[0].fingerprint and np.array_equal(first.items, second[0].items)
    (entry,) = list((tmp_path / "cache").iterdir())
    assert (entry / "meta.json").exists() and ".tmp" not in entry.name


def test_a_crashed_builders_folder_is_removed_by_the_next_build_but_a_running_ones_is_kept(tmp_path):
    import subprocess

    import circuits.data.cache as cache

    path = tmp_path / "key"
    proc = subprocess.Popen(["sleep", "30"])  # a builder still running
    try:
        # the folder of earlier versions' builders, and a pid above Linux's PID_MAX_LIMIT (2^22): no such process
        crashed = [tmp_path / "key.tmp", tmp_path / f"key.tmp-{2**22 + 1}-x"]
        running = [tmp_path / f"key.tmp-{proc.pid}-y", tmp_path / f"key.tmp-{os.getpid()}-z"]
        other = tmp_path / "other.tmp-1-w"
        for p in [*crashed, *running, other]:
            p.mkdir()
        mine = cache._fresh_tmp(path)
        assert mine.exists() and mine.name.startswith(f"key.tmp-{os.getpid()}-") and mine not in running
        assert not any(p.exists() for p in crashed)
        assert all(p.exists() for p in running) and other.exists()  # another entry's folder is not ours to judge
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        (lambda p: None, {}, "data not found"),
        (lambda p: p.write_bytes(b"\x00\x01garbage"), {"format": "parquet"}, "cannot read"),
        (lambda p: write_log(p, LOG), {}, "no item column"),
        (lambda p: write_log(p, LOG), {"user_col": "nope"}, "no column 'nope'"),
        (lambda p: write_log(p, LOG.assign(ts=["x"] * 8)), {"user_col": "uid", "item_col": "doc", "time_col": "ts"},
         "non-numeric timestamps"),
        (lambda p: write_log(p, LOG), {"user_col": "uid", "item_col": "doc", "time_col": "ts", "kcore": 50},
         "no interactions left"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, setup, kwargs, message):
    path = tmp_path / "log.csv"
    setup(path)
    with pytest.raises(UserError, match=message) as e:
        load_dataset(str(path), **kwargs)
    assert "\n" not in str(e.value)


def test_unknown_sequence_id():
    ds = build_dataset(LOG.rename(columns={"uid": "user", "doc": "item", "ts": "timestamp"}).astype({"timestamp": float}), {}, "t")
    with pytest.raises(UserError, match="unknown sequence id 'zz'"):
        ds.sequence("zz")


def test_read_log_keeps_file_order(tmp_path):
    df, _ = read_log(LogSpec(str(write_log(tmp_path / "l.csv")), user_col="uid", item_col="doc", time_col="ts"))
    assert df["item"].tolist() == LOG["doc"].tolist()
    with pytest.raises(UserError):
        Preprocess(tie_break="random")
