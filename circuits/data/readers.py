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
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from circuits.data.names import DEFAULT_DATA, FORMATS  # noqa: F401 (DEFAULT_DATA: re-exported, imported from here)
from circuits.errors import UserError

USER_COLUMNS = ("user_id", "userId", "user", "uid", "session_id")
ITEM_COLUMNS = ("item_id", "movieId", "item", "iid", "doc_id", "document_id")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date")
TITLE_COLUMNS = ("title", "name", "item_title")


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


def _located(spec: LogSpec) -> tuple[Path, str, Path]:
    """(the log's path, its format, the folder it is in or is) after checking that it exists and the format."""
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise UserError(f"data not found: {path}")
    if spec.format not in FORMATS:
        raise UserError(f"unknown format {spec.format!r} (one of {', '.join(FORMATS)})")
    fmt = detect_format(path) if spec.format == "auto" else spec.format
    return path, fmt, path if path.is_dir() else path.parent


def read_log(spec: LogSpec) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a log in any supported format into (normal-form DataFrame, titles)."""
    path, fmt, root = _located(spec)
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
    elif path.is_file() and (beside := _first(path.parent, "items")) is not None:
        files.append(beside)  # read_log takes a log file's titles (and a catalogue pool) from there
    return sorted(files)



# --- item metadata tables (for text encoders) ---------------------------------------------------------------

# The 19 genres of MovieLens 100K's flag columns, in column order (the dataset's README and u.genre); used when
# a folder lacks u.genre.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")


def _genres(values: pd.Series) -> pd.Series:
    """MovieLens genre lists `A|B|C` → `A, B, C` (readable for a text encoder); ML-latest's placeholder
    "(no genres listed)" → empty."""
    out = values.astype(str).str.replace("|", ", ", regex=False)
    return out.where(out != "(no genres listed)", "")


def _with_item_ids(df: pd.DataFrame, id_col: str, path: Path) -> pd.DataFrame:
    """`df` with its id column as `item_id` (str) first, the other columns as they are; ids must be unique."""
    ids = df[id_col].astype(str)
    if (ids == "").any():
        raise UserError(f"{path}: {int((ids == '').sum())} rows have an empty item id")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise UserError(f"{path}: {len(dup):,} duplicate item ids (e.g. {', '.join(dup.unique()[:3])})")
    rest = df.drop(columns=[id_col] + (["item_id"] if "item_id" in df.columns and id_col != "item_id" else []))
    return pd.concat([ids.rename("item_id").reset_index(drop=True), rest.reset_index(drop=True)], axis=1)


def _movies_dat(path: Path) -> pd.DataFrame:
    """MovieLens 1M `movies.dat` (`MovieID::Title::Genres`, latin-1) → item_id, title, genres."""
    df = _read_table(path, sep="::", header=None, engine="python", encoding="latin-1",
                     names=["item_id", "title", "genres"])
    return _with_item_ids(df.assign(genres=_genres(df["genres"])), "item_id", path)


def _u_item(path: Path) -> pd.DataFrame:
    """MovieLens 100K `u.item` (`id|title|release date|video release date|IMDb URL|19 genre flags`, latin-1) →
    item_id, title, release_date, video_release_date, imdb_url, genres (the names of the flags set, from
    `u.genre` beside it; the flag "unknown" means no genre and names none)."""
    genre_file = path.parent / "u.genre"
    names = list(ML100K_GENRES)
    if genre_file.exists():
        g = _read_table(genre_file, sep="|", header=None, encoding="latin-1", names=["name", "index"])
        names = [name for name, _ in sorted(zip(g["name"], g["index"].astype(int)), key=lambda r: r[1])]
    cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]
    df = _read_table(path, sep="|", header=None, encoding="latin-1", names=cols + names)
    flags = df[names].to_numpy() == "1"
    genres = [", ".join(n for n, on in zip(names, row) if on and n != "unknown") for row in flags]
    return _with_item_ids(df[cols].assign(genres=genres), "item_id", path)


def read_item_table(path: Path, id_col: str | None = None) -> pd.DataFrame:
    """An item metadata file → DataFrame: `item_id` (str, unique, first) and every other column of the file
    as it is (title, genres, text, …; CSV/TSV values are strings, JSONL/Parquet keep their types).

    `path`: CSV / TSV / Parquet / JSON lines (gzip ok), ids in `id_col` (default: the first of
    ITEM_COLUMNS); or MovieLens' own files by name: `movies.dat` (1M), `u.item` (100K), each with genres
    ("A, B, C")."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"item metadata file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an item metadata file")
    if id_col is None and path.name.startswith("movies.dat"):
        return _movies_dat(path)
    if id_col is None and path.name == "u.item":
        return _u_item(path)
    df = _read_table(path)
    table = _with_item_ids(df, _pick(df, id_col, ITEM_COLUMNS, "id", path), path)
    if "genres" in table.columns and path.name.startswith("movies.csv"):  # ML-latest's pipe-separated lists
        table["genres"] = _genres(table["genres"])
    return table


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def _join_movielens_genres(items: pd.DataFrame, movies_dat: Path) -> pd.DataFrame:
    """The SASRec ML-1M copy (its README.md): `items` has remapped ids (100, 101, … = rank of the original
    MovieID among the kept movies) and year-stripped titles read as UTF-8 with replacement; `movies.dat` has
    the original ids, titles with years, and genres. Walking both in id order, each item takes the first
    movie at or after the previous match whose title, decoded the same way and year-stripped, equals its
    title (a greedy in-order match). Ambiguous titles: where a stripped title occurs more than once in
    movies.dat (38 of them do), the earliest movie not yet passed is taken; the order constraint pins all but
    one item of the 5-core data (item 2803, "End of the Affair, The", could be the 1999 or the 1955 film;
    both are Drama, so its genres are the same either way). An item that cannot be matched is an error: the
    ids would then not be ranks of MovieIDs, and every later genre would be suspect."""
    movies = _movies_dat(movies_dat)
    movies = movies.iloc[np.argsort(movies["item_id"].astype(int).to_numpy(), kind="stable")]
    # the processing read latin-1 bytes as UTF-8 with replacement (é → U+FFFD); do the same before comparing
    titles = [_YEAR.sub("", t.encode("latin-1").decode("utf-8", errors="replace")) for t in movies["title"]]
    genres = movies["genres"].tolist()
    ids = items["item_id"]
    numeric = ids.str.fullmatch(r"\d+").all()  # the copy's ids are integers; walk anything else in file order
    order = np.argsort(ids.astype(int).to_numpy(), kind="stable") if numeric else np.arange(len(ids))
    matched = [""] * len(items)
    p = 0
    for row in order:
        title = str(items["title"].iloc[row])
        while p < len(titles) and titles[p] != title:
            p += 1
        if p == len(titles):
            raise UserError(f"{movies_dat}: no movie titled {title!r} (item {ids.iloc[row]}) after the previous "
                            "match, so the genres cannot be joined in; give the items file itself to use titles only")
        matched[row] = genres[p]
        p += 1
    return items.assign(genres=matched)


def item_table(spec: LogSpec, id_col: str | None = None) -> pd.DataFrame:
    """The item metadata of a data source, found where `read_log(spec)` finds its titles; see
    `read_item_table` for the columns. `spec.items_path` if given; MovieLens 1M → movies.dat, ML-latest →
    movies.csv, ML-100K → u.item (each with `genres`, "A, B, C"); a log file or folder with `items.*` beside
    the interactions → that file (`id_col` names its id column), and when the folder also holds MovieLens'
    `movies.dat` and the items have no genres (the SASRec ML-1M copy), genres joined in from it. The title
    column read_log uses (`spec.title_col`, or the first of TITLE_COLUMNS) is renamed `title`."""
    path, fmt, root = _located(spec)
    if spec.items_path is not None:
        table = read_item_table(Path(spec.items_path).expanduser(), id_col)
    elif fmt in ("ml-100k", "ml-1m", "ml-latest"):
        name = {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-latest": "movies.csv"}[fmt]
        if not (root / name).exists():
            raise UserError(f"{root}: no item metadata ({name} not found)")
        table = read_item_table(root / name, "movieId" if fmt == "ml-latest" else None)
    else:
        log = _first(path, "interactions") if path.is_dir() else path
        found = _first(log.parent, "items") if log is not None else None
        if found is None:
            raise UserError(f"{path}: no item metadata (no items.* beside the interactions); give an items file")
        table = read_item_table(found, id_col)
        # movies.dat beside the log, or above its derived/ folder (the SASRec ML-1M copy's layout)
        beside = [log.parent] + ([log.parent.parent] if log.parent.name == "derived" else [])
        movies_dat = next((d / "movies.dat" for d in beside if (d / "movies.dat").exists()), None)
        if movies_dat is not None and "genres" not in table.columns and "title" in table.columns:
            table = _join_movielens_genres(table, movies_dat)
    title = spec.title_col if spec.title_col is not None else next((c for c in TITLE_COLUMNS if c in table.columns),
                                                                  None)
    if title is not None and title != "title":
        if title not in table.columns:
            raise UserError(f"no column {title!r} for title in the item metadata (columns: "
                            f"{', '.join(map(str, table.columns))})")
        table = table.drop(columns=[c for c in ("title",) if c in table.columns]).rename(columns={title: "title"})
    return table
