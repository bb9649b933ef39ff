"""The preprocessing cache: a log read and preprocessed once, then memory-mapped.

A cache entry is a folder `cache_dir() / <key>` (key: the files' paths, sizes and modification times, the reading
options, the `Preprocess` options and the name): offsets.npy, items.npy, timestamps.npy (flat arrays, loaded with
`mmap_mode="r"`, so a 50M-interaction log costs no memory until read), vocab.parquet (item ids and titles),
users.parquet (user ids) and meta.json. Entries are written as `<key>.tmp-*` (one folder per builder) and renamed.

Two engines build an entry, with the same result (tested): pandas in memory (`circuits.data.readers` +
`build_dataset`; every format) and DuckDB out of core (`circuits.data.columnar`; CSV/TSV/Parquet tables and folders
of Parquet partitions; bounded memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from circuits.data.names import ENGINES
from circuits.data.readers import LogSpec, detect_format, file_digest_inputs, read_log
from circuits.data.sequences import Preprocess, SequenceDataset, build_dataset, cache_dir
from circuits.errors import UserError

CACHE_VERSION = 2  # 2: a folder of memory-mapped arrays (1: one .npz)


def _cache_key(spec: LogSpec, pre: Preprocess, name: str) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, asdict(spec), asdict(pre), name], sort_keys=True).encode())
    for p in file_digest_inputs(spec):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


ARRAYS = ("offsets", "items", "timestamps")
# logs larger than this (all their files together) are read out of core by the auto engine
COLUMNAR_MIN_BYTES = 256 * 2**20


def save_dataset(ds: SequenceDataset, path: Path) -> None:
    """Write a cache entry: a folder of flat arrays (offsets.npy, items.npy, timestamps.npy, memory-mapped on
    load), the vocabulary and users as Parquet, and meta.json; written as `path.tmp-*` and renamed, so a crash
    never leaves a truncated entry."""
    tmp = _fresh_tmp(path)
    for name in ARRAYS:
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(ds, name)))
    _finish_entry(tmp, path, ds.item_ids, ds.titles, ds.user_ids, ds.name, ds.info)


def _fresh_tmp(path: Path) -> Path:
    """A new, empty folder beside `path`, this builder's own (`<key>.tmp-<pid>-*`): two processes building one entry
    at once (two trainings started on the same log) each write their own, and neither deletes the other's. The
    folders of builders no longer running (a crash, Ctrl-C on a large log) are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in [path.with_name(path.name + ".tmp"), *path.parent.glob(path.name + ".tmp-*")]:
        if stale.is_dir() and not _builder_running(stale.name[len(path.name) + len(".tmp-"):]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    tmp.chmod(0o755)  # as a plain mkdir would make it (mkdtemp: owner only)
    return tmp


def _builder_running(suffix: str) -> bool:
    """Is the process named by a build folder's `<pid>-…` suffix alive (on this machine)?"""
    pid = suffix.split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _finish_entry(tmp: Path, path: Path, item_ids, titles, user_ids, name: str, info: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item_id": pa.array(np.asarray(item_ids).astype(str)),
                             "title": pa.array(np.asarray(titles).astype(str))}), tmp / "vocab.parquet")
    pq.write_table(pa.table({"user_id": pa.array(np.asarray(user_ids).astype(str))}), tmp / "users.parquet")
    (tmp / "meta.json").write_text(json.dumps({"name": name, "info": info}, default=str))
    if path.exists() and not (path / "meta.json").exists():
        shutil.rmtree(path)  # not an entry (entries are renamed into place whole)
    try:
        os.replace(tmp, path)
    except OSError:
        if not (path / "meta.json").exists():
            raise
        shutil.rmtree(tmp)  # another builder finished the same entry (same key: same content) first; keep theirs


def load_dataset_file(path: Path) -> SequenceDataset:
    """A cache entry written by `save_dataset`; the flat arrays memory-mapped (read-only), not read."""
    import pyarrow.parquet as pq

    meta = json.loads((path / "meta.json").read_text())
    vocab = pq.read_table(path / "vocab.parquet")
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return SequenceDataset(
        name=meta["name"],
        item_ids=vocab["item_id"].to_numpy(zero_copy_only=False).astype(object),
        titles=vocab["title"].to_numpy(zero_copy_only=False).astype(object),
        user_ids=pq.read_table(path / "users.parquet")["user_id"].to_numpy(zero_copy_only=False).astype(object),
        info=meta["info"],
        **arrays,
    )


def columnar_wanted(spec: LogSpec, engine: str = "auto") -> bool:
    """Is the log read out of core (DuckDB, `circuits.data.columnar`)? `duckdb`: yes (plain tables and Parquet
    partition folders only); `pandas`: no; `auto`: for a folder of Parquet partitions, or a plain table log whose
    files total more than COLUMNAR_MIN_BYTES. Both engines give the same dataset (tested)."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})")
    if engine == "pandas":
        return False
    from circuits.data.columnar import is_partitioned
    path = Path(spec.path).expanduser()
    partitioned = path.exists() and is_partitioned(path)
    plain = spec.format in ("auto", "csv", "tsv", "parquet") and path.exists() and (
        partitioned or (not path.is_dir() and _suffix_kind(path) in ("csv", "tsv", "parquet"))
        or (path.is_dir() and _plain_folder(path)))
    if engine == "duckdb":
        if not plain:
            raise UserError(f"{path}: --engine duckdb reads CSV/TSV/Parquet tables and Parquet partition folders; "
                            "this log is another format (use --engine pandas)")
        return True
    if partitioned:
        return True
    return plain and sum(p.stat().st_size for p in file_digest_inputs(spec)) > COLUMNAR_MIN_BYTES


def _suffix_kind(path: Path) -> str:
    suffixes = [x.lower() for x in path.suffixes if x.lower() != ".gz"]
    return suffixes[-1].lstrip(".") if suffixes else ""


def _plain_folder(path: Path) -> bool:
    """A folder with `interactions.*` (and no MovieLens files, which the pandas readers parse)."""
    try:
        return detect_format(path) == "folder"
    except UserError:
        return False


def load_log_dataset(
    spec: LogSpec, pre: Preprocess | None = None, use_cache: bool = True, name: str | None = None,
    engine: str = "auto", progress: bool = True,
) -> SequenceDataset:
    """Read + preprocess a log, or load the cached result of exactly that (same files, same options; the
    flat arrays memory-mapped). `engine`: see `columnar_wanted`."""
    pre = pre or Preprocess()
    name = name or Path(spec.path).name
    path = cache_dir() / _cache_key(spec, pre, name)
    if use_cache and (path / "meta.json").exists():
        return load_dataset_file(path)
    if columnar_wanted(spec, engine):
        from circuits.data.columnar import columnar_arrays

        tmp = _fresh_tmp(path)
        out = columnar_arrays(spec, pre, tmp, progress=progress)
        info = {**out["info"], "has_repeats": bool(out["has_repeats"]), "engine": "duckdb", "source": asdict(spec)}
        _finish_entry(tmp, path, out["item_ids"], out["titles"], out["user_ids"], name, info)
        ds = load_dataset_file(path)
        if not use_cache:
            ds = SequenceDataset(ds.name, ds.item_ids, ds.titles, ds.user_ids,
                                 *(np.array(getattr(ds, a)) for a in ARRAYS), info=ds.info)
            shutil.rmtree(path)
        return ds
    df, titles = read_log(spec)
    ds = build_dataset(df, titles, name=name, pre=pre)
    ds.info["source"] = asdict(spec)
    if use_cache:
        save_dataset(ds, path)
        return load_dataset_file(path)
    return ds
