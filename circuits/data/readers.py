"""Read interaction logs and item metadata into one normal form.

Normal form: a DataFrame with columns `user` (str), `item` (str), `timestamp` (float64, seconds or any
monotone unit), in **file order** (the order rows appear in the input, which is the tie-break for equal
timestamps), and a dict item id → title.

Supported inputs (gzip transparently, by a `.gz` suffix):
- a table: `.csv`, `.tsv`, `.parquet` with user / item / timestamp columns (names configurable);
- item metadata: `.csv`, `.tsv`, `.parquet`, `.jsonl` / `.json` (one object per line), id → title;
- MovieLens folders: 100K (`u.data` + `u.item`), 1M (`ratings.dat` + `movies.dat`), latest
  (`ratings.csv` + `movies.csv`), and a folder holding `interactions.*` (+ `items.*`), directly or in `derived/`.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from circuits.errors import UserError

USER_COLUMNS = ("user_id", "userId", "user", "uid", "session_id")
ITEM_COLUMNS = ("item_id", "movieId", "item", "iid", "doc_id", "document_id")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date")
TITLE_COLUMNS = ("title", "name", "item_title")
FORMATS = ("auto", "csv", "tsv", "parquet", "ml-100k", "ml-1m", "ml-latest")
DEFAULT_DATA = "synthetic"  # stands for the built-in generated data wherever a log path goes


@dataclass(frozen=True)
class LogSpec:
    """Where a log is and how to read it; every field is recorded in the run directory."""

    path: str
    format: str = "auto"
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    items_path: str | None = None
    title_col: str | None = None


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_table(path: Path, sep: str | None = None, kind: str | None = None, **kw) -> pd.DataFrame:
    """Read a table; `kind` (csv, tsv, parquet) overrides what the file name suggests."""
    ext = f".{kind}" if kind else _suffix(path)
    try:
        if ext == ".parquet":
            return pd.read_parquet(path)
        if ext in (".jsonl", ".json"):
            return pd.read_json(path, lines=True, dtype=False)
        if sep is None:
            sep = "\t" if ext in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, compression="infer", dtype=str, keep_default_na=False, **kw)
    except (UnicodeDecodeError, gzip.BadGzipFile, ValueError, OSError, pd.errors.ParserError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def _pick(df: pd.DataFrame, given: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if given is not None:
        if given not in df.columns:
            raise UserError(f"{path}: no column {given!r} for {what} (columns: {', '.join(map(str, df.columns))})")
        return given
    for c in candidates:
        if c in df.columns:
            return c
    raise UserError(
        f"{path}: no {what} column (looked for {', '.join(candidates)}; columns: "
        f"{', '.join(map(str, df.columns))}); name it with --{what}-col"
    )


def _timestamps(values: pd.Series, column: str, path: Path) -> pd.Series:
    """Numbers as they are; ISO-8601 date strings as seconds since the epoch; anything else is an error."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric.astype("float64")
    try:
        dates = pd.to_datetime(values, format="ISO8601", utc=True)
        return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64")
    except (ValueError, TypeError):
        bad = values[numeric.isna()].iloc[0]
        raise UserError(f"{path}: column {column!r} has non-numeric timestamps (e.g. {bad!r})") from None


def _normalise(df: pd.DataFrame, spec: LogSpec, path: Path) -> pd.DataFrame:
    u = _pick(df, spec.user_col, USER_COLUMNS, "user", path)
    i = _pick(df, spec.item_col, ITEM_COLUMNS, "item", path)
    t = _pick(df, spec.time_col, TIME_COLUMNS, "time", path)
    out = pd.DataFrame(
        {
            "user": df[u].astype(str).to_numpy(),
            "item": df[i].astype(str).to_numpy(),
            "timestamp": _timestamps(df[t], t, path).to_numpy(),
        }
    )
    missing = (out["user"] == "") | (out["item"] == "")
    if missing.any():
        raise UserError(f"{path}: {int(missing.sum())} rows have an empty user or item id")
    return out


def read_titles(path: Path, title_col: str | None = None, id_col: str | None = None) -> dict[str, str]:
    if not path.exists():
        raise UserError(f"item metadata file not found: {path}")
    df = _read_table(path)
    i = _pick(df, id_col, ITEM_COLUMNS, "item", path)
    t = _pick(df, title_col, TITLE_COLUMNS, "title", path)
    return dict(zip(df[i].astype(str), df[t].astype(str)))


def _movielens_100k(root: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    df = _read_table(root / "u.data", sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    items = _read_table(root / "u.item", sep="|", header=None, encoding="latin-1", usecols=[0, 1])
    return df, dict(zip(items[0].astype(str), items[1].astype(str)))


def _movielens_1m(root: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    kw = dict(sep="::", header=None, engine="python", encoding="latin-1")
    df = _read_table(root / "ratings.dat", names=["user", "item", "rating", "timestamp"], **kw)
    titles: dict[str, str] = {}
    if (root / "movies.dat").exists():
        movies = _read_table(root / "movies.dat", names=["item", "title", "genres"], **kw)
        titles = dict(zip(movies["item"].astype(str), movies["title"].astype(str)))
    return df, titles


def _movielens_latest(root: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    df = _read_table(root / "ratings.csv")
    titles = read_titles(root / "movies.csv", "title", "movieId") if (root / "movies.csv").exists() else {}
    return df, titles


def _first(root: Path, stem: str) -> Path | None:
    for sub in (root, root / "derived"):
        for ext in (".tsv", ".csv", ".parquet", ".jsonl"):
            for gz in ("", ".gz"):
                p = sub / f"{stem}{ext}{gz}"
                if p.exists():
                    return p
    return None


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "u.data").exists():
            return "ml-100k"
        if (path / "ratings.dat").exists():
            return "ml-1m"
        if (path / "ratings.csv").exists() and (path / "movies.csv").exists():
            return "ml-latest"
        if _first(path, "interactions") is not None:
            return "folder"
        raise UserError(
            f"{path}: folder holds no known log (u.data, ratings.dat, ratings.csv + movies.csv, interactions.*)"
        )
    ext = _suffix(path)
    if path.name.startswith("ratings.dat"):
        return "ml-1m"
    if path.name == "u.data":
        return "ml-100k"
    if ext in (".csv", ".tsv", ".parquet"):
        return ext[1:]
    raise UserError(f"{path}: cannot tell the format from the name; pass --format ({', '.join(FORMATS)})")


def read_log(spec: LogSpec) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a log in any supported format into (normal-form DataFrame, titles)."""
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise UserError(f"data not found: {path}")
    if spec.format not in FORMATS:
        raise UserError(f"unknown format {spec.format!r} (one of {', '.join(FORMATS)})")
    fmt = detect_format(path) if spec.format == "auto" else spec.format
    root = path if path.is_dir() else path.parent
    titles: dict[str, str] = {}
    if fmt == "ml-100k":
        raw, titles = _movielens_100k(root)
        spec = LogSpec(str(path), fmt, "user", "item", "timestamp")
    elif fmt == "ml-1m":
        raw, titles = _movielens_1m(root)
        spec = LogSpec(str(path), fmt, "user", "item", "timestamp")
    elif fmt == "ml-latest":
        raw, titles = _movielens_latest(root)
    else:
        table = _first(path, "interactions") if path.is_dir() else path
        raw = _read_table(table, kind=fmt if fmt in ("csv", "tsv", "parquet") else None)
        path = table
        if spec.items_path is None and table.parent is not None:
            found = _first(table.parent, "items")
            if found is not None:
                titles = read_titles(found, spec.title_col)
    if spec.items_path is not None:
        titles = read_titles(Path(spec.items_path).expanduser(), spec.title_col)
    df = _normalise(raw, spec, path)
    if df.empty:
        raise UserError(f"{path}: the log has no rows")
    return df, titles


def file_digest_inputs(spec: LogSpec) -> list[Path]:
    """The files whose contents determine what `read_log(spec)` returns (for cache keys)."""
    path = Path(spec.path).expanduser()
    files = [p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file()]
    if spec.items_path is not None:
        files.append(Path(spec.items_path).expanduser())
    return sorted(files)

