"""Out-of-core preprocessing of large interaction logs: DuckDB reads and encodes, NumPy filters and sorts.

`columnar_arrays(spec, pre, out_dir)` writes `offsets.npy`, `items.npy` and `timestamps.npy` for a log and returns
the rest of a `SequenceDataset` (ids, titles, info). The result is the same, array for array and id for id, as
`build_dataset(*read_log(spec), name, pre)` (the conventions of `circuits.data.sequences`), for every log that
path reads, and also for a folder of Parquet partitions (`DATA/interactions/*.parquet`, read in sorted
file-name order, with `DATA/items.*` beside the folder), which the pandas path does not read.

How, with bounded memory:
- **File order.** Every row gets its position in the log, `g` = (rows of the files before it) + its row number in
  its file: Parquet via DuckDB's `file_index` and `file_row_number` (row counts from the files' footers); a
  CSV/TSV file is first streamed through pyarrow's CSV reader (which yields rows in file order) into a temporary
  Parquet file of string columns, and so gets its row numbers the same way. Results are scattered by `g`,
  so the order in which DuckDB produces rows never matters.
- **Encoding (DuckDB, spills to disk under `memory_limit`).** The distinct user and item ids become dictionaries
  (id → dense int32 code); a hash join turns the log into (g, user code, item code[, timestamp]), streamed as
  Arrow record batches into NumPy arrays: 16 bytes a row (e.g. 800 MB for 50M rows). Numeric timestamps are cast
  in DuckDB; string timestamps (every CSV) go through pandas' own `to_numeric` / ISO-8601 parsing a batch at a
  time, exactly as `readers._timestamps` does for the whole column.
- **The rest (NumPy on the compact int arrays).** k-core with `bincount`; users' order of first appearance and
  the items' first appearance with `minimum.at`; the vocabulary from `sequences._sorted_ids` on the (≤ millions
  of) distinct ids; the sort with `np.lexsort` (stable, so equal keys keep file order), skipped where the rows
  are in order already; the cold-start hold-out with the same random draw as `sequences._hold_out_items`; the
  outputs filled chunk by chunk into `np.lib.format.open_memmap` files, one at a time. Peak memory is about
  40-60 bytes a row (50M rows: 1.9-2.8 GB), whatever `memory_limit` DuckDB gets.

Not read out of core (done by the pandas path and written the same way): MovieLens 100K / 1M folders, JSON-lines
logs, and zip/xz/tar-compressed tables. Where the two paths differ, this one refuses: ids must be integer or string
columns (floating-point or boolean ids, and missing ids, are errors); a CSV row with too few or too many fields is
an error (pandas pads it / may take a column as the index); so is a missing value in a datetime-typed column.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from circuits.data.readers import (
    ITEM_COLUMNS,
    TIME_COLUMNS,
    TITLE_COLUMNS,
    USER_COLUMNS,
    LogSpec,
    _first,
    _located,
    _pick,
    _read_table,
    _suffix,
    read_log,
    read_titles,
)
from circuits.data.sequences import PAD_ID, Preprocess, _sorted_ids, build_dataset
from circuits.errors import UserError

BATCH_ROWS = 1 << 20  # rows per Arrow record batch streamed out of DuckDB
CHUNK = 1 << 22  # rows per NumPy chunk when filling the output files
_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
              "UHUGEINT"}
_FAST_TIME_TYPES = _INT_TYPES - {"HUGEINT", "UHUGEINT"} | {"FLOAT", "DOUBLE", "BOOLEAN"}
# pandas' compression="infer" by suffix: these pyarrow opens too, the others are left to pandas
_ARROW_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
_PANDAS_ONLY_COMPRESSIONS = (".zip", ".xz", ".tar")


# --- partitioned logs -----------------------------------------------------------------------------------------
def _parquet_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob("*.parquet") if p.is_file()), key=lambda p: p.name)


def is_partitioned(path: str | Path) -> bool:
    """A folder of Parquet partitions: `path/interactions/` holds `*.parquet` files, or `path` itself does (and
    is no folder `read_log` reads, i.e. holds no `interactions.*`)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return False
    if (p / "interactions").is_dir():
        return bool(_parquet_in(p / "interactions"))
    return _first(p, "interactions") is None and bool([f for f in _parquet_in(p) if not _is_items(f)])


def _is_items(f: Path) -> bool:
    return f.name.split(".")[0] == "items"


def partition_files(path: str | Path) -> list[Path]:
    """The Parquet partitions of a partitioned log (`is_partitioned`), in the order they are read (sorted by file
    name); an `items.parquet` in a bare folder of partitions is the item metadata, not a partition."""
    p = Path(path).expanduser()
    if (p / "interactions").is_dir():
        return _parquet_in(p / "interactions")
    return [f for f in _parquet_in(p) if not _is_items(f)]


# --- where the log and its titles are -------------------------------------------------------------------------
@dataclass
class _Source:
    path: Path  # named in messages, as read_log names it
    parquet: list[Path]  # the Parquet files of the log, in file order (empty for a CSV/TSV table)
    csv: Path | None  # a CSV/TSV table (converted to Parquet first)
    sep: str
    cols: tuple[str | None, str | None, str | None]  # user, item, time column as given
    titles: tuple[Path, str | None, str | None] | None  # (file, title column, id column) as read_titles takes them


def _source(spec: LogSpec) -> _Source | None:
    """Where `read_log(spec)` would read the log and the titles from; None where this module leaves it to the pandas
    path (MovieLens 100K / 1M, JSON lines, compressions pyarrow does not open)."""
    cols = (spec.user_col, spec.item_col, spec.time_col)
    path = Path(spec.path).expanduser()
    if is_partitioned(path):
        if spec.format not in ("auto", "parquet"):
            raise UserError(f"{path}: a folder of Parquet partitions is read as parquet, not {spec.format}")
        parts = partition_files(path)
        beside = path if (path / "interactions").is_dir() else path.parent
        found = _first(path, "items") or _first(beside, "items")
        titles = (found, spec.title_col, None) if found is not None else None
        if spec.items_path is not None:
            titles = (Path(spec.items_path).expanduser(), spec.title_col, None)
        return _Source(path / "interactions" if (path / "interactions").is_dir() else path, parts, None, ",", cols,
                       titles)
    path, fmt, root = _located(spec)
    titles = None
    if fmt in ("ml-100k", "ml-1m"):
        return None
    if fmt == "ml-latest":
        table, kind, where = root / "ratings.csv", None, path
        if (root / "movies.csv").exists():
            titles = (root / "movies.csv", "title", "movieId")
    else:
        table = _first(path, "interactions") if path.is_dir() else path
        kind = fmt if fmt in ("csv", "tsv", "parquet") else None
        where = table
        if spec.items_path is None:
            found = _first(table.parent, "items")
            if found is not None:
                titles = (found, spec.title_col, None)
    if spec.items_path is not None:
        titles = (Path(spec.items_path).expanduser(), spec.title_col, None)
    ext = f".{kind}" if kind else _suffix(table)
    if ext in (".jsonl", ".json"):
        return None
    if ext == ".parquet":
        return _Source(where, [table], None, ",", cols, titles)
    if table.suffix.lower() in _PANDAS_ONLY_COMPRESSIONS:
        return None
    return _Source(where, [], table, "\t" if ext in (".tsv", ".tab") else ",", cols, titles)


def _parquet_columns(f: Path) -> list[str]:
    """The columns pandas shows for a Parquet file (without the pandas index columns it restores as the index)."""
    try:
        schema = pq.read_schema(f)
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"cannot read {f}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    meta = schema.pandas_metadata or {}
    index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    return [n for n in schema.names if n not in index]


def _pick_all(columns: list[str], src: _Source) -> tuple[str, str, str]:
    """The user, item and time columns, picked (and missing ones reported) as readers._normalise does."""
    frame = pd.DataFrame(columns=columns)
    u, i, t = src.cols
    return (_pick(frame, u, USER_COLUMNS, "user", src.path), _pick(frame, i, ITEM_COLUMNS, "item", src.path),
            _pick(frame, t, TIME_COLUMNS, "time", src.path))


def _titles(where: tuple[Path, str | None, str | None] | None) -> Callable[[], dict[str, str]]:
    """`read_titles(path, title_col, id_col)` in two steps: the file and its columns are checked now (so a bad
    metadata file fails before the log is read, as in read_log), the two columns it uses are read when called."""
    if where is None:
        return dict
    path, title_col, id_col = where
    if not path.exists():
        raise UserError(f"item metadata file not found: {path}")
    ext = _suffix(path)
    if ext in (".jsonl", ".json") or path.suffix.lower() in _PANDAS_ONLY_COMPRESSIONS:
        titles = read_titles(path, title_col, id_col)
        return lambda: titles
    frame = pd.DataFrame(columns=_parquet_columns(path)) if ext == ".parquet" else _read_table(path, nrows=0)
    i = _pick(frame, id_col, ITEM_COLUMNS, "item", path)
    t = _pick(frame, title_col, TITLE_COLUMNS, "title", path)
    use = list(dict.fromkeys([i, t]))

    def load() -> dict[str, str]:
        if ext == ".parquet":
            try:
                df = pd.read_parquet(path, columns=use)
            except (OSError, ValueError, pa.ArrowException) as e:
                raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        else:
            df = _read_table(path, usecols=use)
        return dict(zip(df[i].astype(str), df[t].astype(str)))

    return load


# --- reading with DuckDB --------------------------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _bar(progress: bool, total: int | None, desc: str, unit: str = "rows") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not progress, leave=False)


def _csv_to_parquet(src: _Source, dest: Path, progress: bool) -> tuple[str, str, str]:
    """Stream the CSV/TSV table into a Parquet file of string columns u, i, t in file order; returns the columns
    picked (as read_log picks them from the pandas header)."""
    path = src.csv
    header = list(map(str, _read_table(path, sep=src.sep, nrows=0).columns))  # the names pandas gives
    u, i, t = _pick_all(header, src)
    blank = " \t\r\n".replace(src.sep, "")

    def invalid(row: pcsv.InvalidRow) -> str:  # pandas skips lines of blanks too; any other bad row is an error
        return "skip" if row.text.strip(blank) == "" else "error"

    parse = pcsv.ParseOptions(delimiter=src.sep, quote_char='"', double_quote=True, escape_char=False,
                              newlines_in_values=True, ignore_empty_lines=True, invalid_row_handler=invalid)
    use = list(dict.fromkeys([u, i, t]))
    convert = pcsv.ConvertOptions(include_columns=use, column_types={c: pa.string() for c in use},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    schema = pa.schema([("u", pa.string()), ("i", pa.string()), ("t", pa.string())])
    try:
        with pa.input_stream(str(path), compression=_ARROW_COMPRESSIONS.get(path.suffix.lower())) as stream:
            reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=1 << 24),
                                   parse_options=parse, convert_options=convert)
            with pq.ParquetWriter(dest, schema, compression="snappy") as writer, \
                    _bar(progress, None, f"reading {path.name}") as bar:
                for batch in reader:
                    names = batch.schema.names
                    writer.write_batch(pa.record_batch([batch.column(names.index(c)) for c in (u, i, t)], schema))
                    bar.update(batch.num_rows)
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return u, i, t


def _connect(tmp: Path, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(":memory:", config={
            "memory_limit": memory_limit, "threads": threads, "temp_directory": str(tmp / "duckdb"),
            "preserve_insertion_order": False})
        con.sql("SET enable_progress_bar = false")
        return con
    except duckdb.Error as e:
        raise UserError(f"cannot start DuckDB (memory_limit={memory_limit!r}): {str(e).splitlines()[0]}") from None


@dataclass
class _Log:
    """The log in file order as dense codes: user[g], item[g] (int32), time[g] (float64), and the codes' ids."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    user_ids: np.ndarray  # object str [n user codes]
    item_ids: np.ndarray  # object str [n item codes]


def _encode(con: duckdb.DuckDBPyConnection, files: list[Path], cols: tuple[str, str, str],
            names: tuple[str, str, str], where: Path, progress: bool) -> _Log:
    """The log in `files` (columns `cols`, called `names` in messages) as codes in file order."""
    u, i, t = cols
    bases = np.zeros(len(files) + 1, dtype=np.int64)
    try:
        bases[1:] = np.cumsum([pq.read_metadata(f).num_rows for f in files])
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"cannot read {where}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    n = int(bases[-1])
    listing = "[" + ", ".join(_lit(f) for f in files) + "]"
    base_list = "[" + ", ".join(str(b) for b in bases[:-1]) + "]"
    try:
        con.sql(f"CREATE TEMP VIEW src AS SELECT ({base_list}::BIGINT[])[file_index::BIGINT + 1] + file_row_number::BIGINT AS g, "
                    f"{_q(u)} AS u, {_q(i)} AS i, {_q(t)} AS t FROM read_parquet({listing}, file_row_number = true)")
        types = {r[0]: r[1] for r in con.sql("DESCRIBE SELECT u, i, t FROM src").fetchall()}
    except duckdb.Error as e:
        raise UserError(f"cannot read {where}: {str(e).splitlines()[0][:200]}") from None
    for c, name in (("u", names[0]), ("i", names[1])):
        if types[c] not in _INT_TYPES and types[c] != "VARCHAR":
            raise UserError(f"{where}: column {name!r} holds {types[c]} values; user and item ids must be integers "
                            "or strings")
    # dictionaries: id → dense code (arbitrary order; the orders that matter are made in NumPy)
    for c in ("u", "i"):
        con.sql(f"CREATE TEMP TABLE d{c} AS SELECT v, (row_number() OVER () - 1)::INTEGER AS code "
                    f"FROM (SELECT DISTINCT {c} AS v FROM src)")
    empty = " OR v = ''"
    bad = sum(con.sql(f"SELECT count(*) FROM d{c} WHERE v IS NULL{empty if types[c] == 'VARCHAR' else ''}")
              .fetchall()[0][0] for c in ("u", "i"))
    n_time = con.sql("SELECT count(t) FROM src").fetchall()[0][0]

    time = np.empty(n, dtype=np.float64)
    fast = types["t"] in _FAST_TIME_TYPES and n_time == n
    stamp = re.fullmatch(r"TIMESTAMP(_MS|_NS|_S)?( WITH TIME ZONE)?|TIMESTAMPTZ_NS", types["t"])
    if stamp:  # pandas: to_numeric of datetime64[unit] = integers in the file's unit
        if n_time < n:
            raise UserError(f"{where}: column {names[2]!r} has {n - n_time} empty timestamps")
        unit = pq.read_schema(files[0]).field(t).type.unit
        time_sql = f"epoch_{unit}(s.t)::DOUBLE" if unit in ("ms", "us", "ns") else "epoch(s.t)::DOUBLE"
        fast = True
    elif fast:
        time_sql = "s.t::DOUBLE"
    else:
        _string_times(con, time, names[2], where, progress)
    if bad:
        n_bad = con.sql(
            "SELECT count(*) FROM src WHERE u IS NULL OR i IS NULL"
            + "".join(f" OR {c} = ''" for c in ("u", "i") if types[c] == "VARCHAR")).fetchall()[0][0]
        raise UserError(f"{where}: {n_bad} rows have an empty user or item id")
    if n == 0:
        raise UserError(f"{where}: the log has no rows")

    user = np.empty(n, dtype=np.int32)
    item = np.empty(n, dtype=np.int32)
    query = (f"SELECT s.g, du.code, di.code{', ' + time_sql if fast else ''} FROM src s "
             "JOIN du ON s.u = du.v JOIN di ON s.i = di.v")
    seen = 0
    with _bar(progress, n, "encoding") as bar:
        for batch in con.sql(query).to_arrow_reader(BATCH_ROWS):
            g = batch.column(0).to_numpy()
            user[g] = batch.column(1).to_numpy()
            item[g] = batch.column(2).to_numpy()
            if fast:
                time[g] = batch.column(3).to_numpy()
            seen += batch.num_rows
            bar.update(batch.num_rows)
    assert seen == n, (seen, n)

    def ids(c: str) -> np.ndarray:
        out = np.empty(con.sql(f"SELECT count(*) FROM d{c}").fetchall()[0][0], dtype=object)
        for batch in con.sql(f"SELECT code, v::VARCHAR FROM d{c}").to_arrow_reader(BATCH_ROWS):
            out[batch.column(0).to_numpy()] = batch.column(1).to_numpy(zero_copy_only=False)
        return out

    return _Log(user, item, time, ids("u"), ids("i"))


def _string_times(con: duckdb.DuckDBPyConnection, out: np.ndarray, column: str, where: Path, progress: bool) -> None:
    """`readers._timestamps` a batch at a time: numbers if every value is one, else ISO-8601 dates as seconds since
    the epoch; an error names the first value (in file order) that is not a number."""
    first_bad, bad_value, numeric = len(out), None, True

    def batches(desc: str):
        with _bar(progress, len(out), desc) as bar:
            for batch in con.sql("SELECT g, t FROM src").to_arrow_reader(BATCH_ROWS):
                values = batch.column(1)
                if pa.types.is_string_view(values.type) or pa.types.is_large_string(values.type):
                    values = values.cast(pa.string())
                yield batch.column(0).to_numpy(), values.to_pandas()
                bar.update(batch.num_rows)

    for g, values in batches("timestamps"):
        number = pd.to_numeric(values, errors="coerce")
        missing = number.isna().to_numpy()
        if missing.any():
            numeric = False
            k = int(np.argmin(np.where(missing, g, len(out))))
            if g[k] < first_bad:
                first_bad, bad_value = int(g[k]), values.iloc[k]
        elif numeric:
            out[g] = number.astype("float64").to_numpy()
    if numeric:
        return
    for g, values in batches("dates"):
        try:
            dates = pd.to_datetime(values, format="ISO8601", utc=True)
        except (ValueError, TypeError):
            raise UserError(f"{where}: column {column!r} has non-numeric timestamps (e.g. {bad_value!r})") from None
        out[g] = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64").to_numpy()


# --- preprocessing in NumPy -----------------------------------------------------------------------------------
def _kcore(log: _Log, k: int) -> _Log:
    """`sequences.kcore_filter` on the codes: drop users and items with fewer than k rows, repeatedly."""
    if k <= 0:
        return log
    user, item, keep = log.user, log.item, None
    while True:
        ok = (np.bincount(user, minlength=len(log.user_ids)) >= k)[user]
        ok &= (np.bincount(item, minlength=len(log.item_ids)) >= k)[item]
        if ok.all():
            break
        if keep is None:
            keep = ok
        else:
            keep[keep] = ok
        user, item = user[ok], item[ok]
    if keep is None:
        return log
    out = _Log(user, item, log.time[keep], log.user_ids, log.item_ids)
    log.user = log.item = log.time = None  # the caller's copy of the full log goes now
    return out


def _by_first_appearance(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """The codes that occur, in order of their first row."""
    n = len(codes)
    first = np.full(n_codes, n, dtype=np.int64)
    for lo in range(0, n, CHUNK):
        np.minimum.at(first, codes[lo : lo + CHUNK], np.arange(lo, min(n, lo + CHUNK), dtype=np.int64))
    present = np.flatnonzero(first < n)
    return present[np.argsort(first[present], kind="stable")]


def _hold_out(user: np.ndarray, item: np.ndarray, n_items: int, share: float, seed: int
              ) -> tuple[np.ndarray | None, dict]:
    """`sequences._hold_out_items` on sorted (user, item) arrays: the rows kept (bool) and the info."""
    rng = np.random.default_rng(seed)
    log_items = np.flatnonzero(np.bincount(item, minlength=n_items + 1)).astype(np.int64)  # = np.unique(items)
    held = rng.choice(log_items, size=max(1, round(share * len(log_items))), replace=False)
    is_held = np.zeros(n_items + 1, dtype=bool)
    is_held[held] = True

    def last(u: np.ndarray) -> np.ndarray:
        return np.r_[u[1:] != u[:-1], True]

    keep = ~is_held[item] | last(user)
    rows = np.flatnonzero(keep)
    u2 = user[rows]
    short = np.bincount(u2)[u2] < 3
    keep[rows[is_held[item[rows]] & short]] = False
    u3, i3 = user[keep], item[keep]
    n_cold_targets = int((is_held[i3] & last(u3)).sum())
    return keep, {"cold_items_held_out": int(len(held)), "cold_test_targets": n_cold_targets}


def _sort_order(user: np.ndarray, time: np.ndarray, item: np.ndarray | None) -> np.ndarray | None:
    """The stable sort by (user, time[, item]) as a permutation, or None where the rows are in that order already
    (an already-sequenced log: the check is one pass, the sort of a 50M-row log some seconds)."""
    for lo in range(0, len(user) - 1, CHUNK):
        hi = min(len(user), lo + CHUNK + 1)
        u, t = user[lo:hi], time[lo:hi]
        later = (u[1:] > u[:-1]) | ((u[1:] == u[:-1]) & (t[1:] > t[:-1]))
        ties = (u[1:] == u[:-1]) & (t[1:] == t[:-1])
        if item is not None:
            ties &= item[lo + 1 : hi] >= item[lo : hi - 1]
        if not (later | ties).all():  # (a NaN time is neither: such logs are sorted)
            return np.lexsort((time, user) if item is None else (item, time, user))
    return None


def _write(path: Path, dtype, values: np.ndarray, order: np.ndarray | None, progress: bool) -> None:
    """An .npy file of `values` (taken in `order` if given), filled a chunk at a time through a memory map."""
    n = len(values) if order is None else len(order)
    if n == 0:
        np.save(path, np.zeros(0, dtype=dtype))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n,))
    with _bar(progress, n, f"writing {path.name}") as bar:
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            out[lo:hi] = values[lo:hi] if order is None else values[order[lo:hi]]
            bar.update(hi - lo)
    out.flush()
    del out


def _has_repeats(user: np.ndarray, item: np.ndarray, offsets: np.ndarray) -> bool:
    """Does a user hold an item twice? Rows are grouped by user: checked a run of whole users at a time."""
    lo = 0
    while lo < len(user):
        hi = int(offsets[min(int(np.searchsorted(offsets, lo + CHUNK)), len(offsets) - 1)])
        pairs = user[lo:hi].astype(np.int64) * (int(item.max()) + 1) + item[lo:hi]
        pairs.sort()
        if (pairs[1:] == pairs[:-1]).any():
            return True
        lo = hi
    return False


def _build(log: _Log, load_titles: Callable[[], dict[str, str]], pre: Preprocess, n_raw: int, name: str, out_dir: Path, progress: bool) -> dict:
    """The NumPy half: build_dataset's steps on the encoded log; `load_titles()` gives the titles (read late,
    when the big arrays are gone, unless the catalogue pool needs them for the vocabulary)."""
    log = _kcore(log, pre.kcore)
    n = len(log.user)
    if n == 0:
        raise UserError(f"{name}: no interactions left after {pre.kcore}-core filtering (of {n_raw})")
    # vocabulary: _sorted_ids over the ids in order of first appearance (+ the catalogue), as build_dataset
    item_order = _by_first_appearance(log.item, len(log.item_ids))
    log_ids = log.item_ids[item_order]
    titles = None
    if pre.pool == "catalogue":
        titles = load_titles()
        if not titles:
            raise UserError(f"{name}: --pool catalogue needs item metadata (--items), and there is none")
        log_ids = np.concatenate([log_ids, np.asarray(list(titles), dtype=object)])
    item_ids = _sorted_ids(log_ids)
    vocab = np.zeros(len(log.item_ids), dtype=np.int32)
    vocab[item_order] = pd.Index(item_ids).get_indexer(log.item_ids[item_order]) + 1
    item = vocab[log.item]
    log.item = None
    user_order = _by_first_appearance(log.user, len(log.user_ids))  # users in order of first appearance
    rank = np.zeros(len(log.user_ids), dtype=np.int32)
    rank[user_order] = np.arange(len(user_order), dtype=np.int32)
    user = rank[log.user]
    user_ids = log.user_ids[user_order]
    log.user = None
    time, log.time = log.time, None
    perm = _sort_order(user, time, item if pre.tie_break == "item" else None)
    if perm is not None:
        user = user[perm]
        item = item[perm]

    info: dict = {}
    if pre.cold_items > 0:
        keep, info = _hold_out(user, item, len(item_ids), pre.cold_items, pre.cold_seed)
        perm = np.flatnonzero(keep) if perm is None else perm[keep]
        user, item = user[keep], item[keep]
        del keep
        kept = np.flatnonzero(np.bincount(user, minlength=len(user_ids)))  # a user whose every row was held out
        code = np.full(len(user_ids), -1, dtype=np.int32)
        code[kept] = np.arange(len(kept), dtype=np.int32)
        user, user_ids = code[user], user_ids[kept]
    m = len(user)

    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=len(user_ids)), out=offsets[1:])
    _write(out_dir / "offsets.npy", np.int64, offsets, None, progress)
    _write(out_dir / "items.npy", np.int64, item, None, progress)
    has_repeats = _has_repeats(user, item, offsets)
    del user, item
    _write(out_dir / "timestamps.npy", np.float64, time, perm, progress)
    del time, perm

    if titles is None:
        titles = load_titles()
    all_ids = np.concatenate([[PAD_ID], item_ids.astype(str)]).astype(object)
    all_titles = np.array([PAD_ID] + [titles.get(i, f"item {i}") for i in item_ids.astype(str)], dtype=object)
    return {
        "item_ids": all_ids,
        "titles": all_titles,
        "user_ids": np.asarray(user_ids).astype(str).astype(object),
        "info": {"rows_read": n_raw, "rows_kept": m, **asdict(pre), **info},
        "has_repeats": has_repeats,
    }


def _through_pandas(spec: LogSpec, pre: Preprocess, out_dir: Path, name: str) -> dict:
    """The logs this module does not read itself: build_dataset, written the same way."""
    ds = build_dataset(*read_log(spec), name=name, pre=pre)
    for file, a in (("offsets.npy", ds.offsets), ("items.npy", ds.items), ("timestamps.npy", ds.timestamps)):
        np.save(out_dir / file, a)
    user = np.repeat(np.arange(ds.n_users), ds.lengths)
    pairs = user.astype(np.int64) * ds.d_vocab + ds.items
    return {"item_ids": ds.item_ids, "titles": ds.titles, "user_ids": ds.user_ids, "info": dict(ds.info),
            "has_repeats": bool(len(np.unique(pairs)) < len(pairs))}


def columnar_arrays(spec: LogSpec, pre: Preprocess, out_dir: Path, memory_limit: str = "4GB",
                    progress: bool = True, *, name: str | None = None, threads: int = 2) -> dict:
    """Read + preprocess the log of `spec` out of core and write offsets.npy (int64 [n_users+1]), items.npy
    (int64 [n_interactions], vocabulary indices 1..n_items) and timestamps.npy (float64) into out_dir
    (np.lib.format.open_memmap, filled in chunks), and return {"item_ids": object array of str [d_vocab],
    "<pad>" first; "titles": object array [d_vocab] ("<pad>" first, a missing title is f"item {id}");
    "user_ids": object array of str [n_users]; "info": build_dataset's info (rows_read, rows_kept, the
    Preprocess fields, the cold-start counts when cold_items > 0); "has_repeats": bool}.

    The same as `build_dataset(*read_log(spec), name, pre)` (see the module docstring for how), and for folders
    of Parquet partitions too. DuckDB runs with `memory_limit` and `threads` and spills to a temporary folder
    inside out_dir, removed afterwards; `name` is the data set's name in messages (default: the path's name)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or Path(spec.path).name
    src = _source(spec)
    if src is None:
        return _through_pandas(spec, pre, out_dir, name)
    load_titles = _titles(src.titles)
    tmp = Path(tempfile.mkdtemp(prefix=".columnar-", dir=out_dir))
    try:
        if src.csv is not None:
            files = [tmp / "log.parquet"]
            names = _csv_to_parquet(src, files[0], progress)
            cols = ("u", "i", "t")
        else:
            files = src.parquet
            cols = names = _pick_all(_parquet_columns(files[0]), src)
        con = _connect(tmp, memory_limit, threads)
        try:
            log = _encode(con, files, cols, names, src.path, progress)
        finally:
            con.close()
        if src.csv is not None:
            os.remove(files[0])
        return _build(log, load_titles, pre, len(log.user), name, out_dir, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
