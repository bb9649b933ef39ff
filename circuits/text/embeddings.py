"""Item embeddings: one vector per item id, their files, and their rows in a vocabulary's order.

`ItemEmbeddings.vectors` is float32 [n_items, d_text], row i the vector of `ids[i]`; ids are unique strings.
Files (the format by the suffix), for teams whose encoder lives elsewhere as much as for `circuits.embed`:

- `.parquet`: columns `item_id` (string; or another name of `readers.ITEM_COLUMNS`) and `embedding`
  (list<float32>, one list per row, all of one length; `vector` is accepted too); `meta` as JSON under the
  schema metadata key `circuits.embeddings`.
- `.npy` + sibling ids file: `X.npy` holds the [n_items, d_text] array, `X.ids.txt` one item id per line, in
  row order (UTF-8); `X.meta.json` beside them (optional) the meta.
- `.npz`: arrays `ids` [n_items] (strings or integers) and `vectors` [n_items, d_text]; optional `meta` (a JSON
  string).

Vectors may be stored as any real numbers; they are read as float32. Bad files are one-line `UserError`s:
ragged or non-numeric vectors, ids and vector counts that differ, duplicate or empty ids, NaN / inf.
Writing is atomic (temp file + rename), so a failed write leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Float

from circuits.data.sequences import PAD_ID
from circuits.errors import UserError

EMBEDDING_SUFFIXES = (".parquet", ".npy", ".npz")
META_KEY = b"circuits.embeddings"  # Parquet schema metadata key holding the meta as JSON


@dataclass
class ItemEmbeddings:
    """`vectors[i]` is the embedding of item `ids[i]`.

    `meta` (JSON-serialisable, kept in files): `model` (name or folder), `model_sha256` (its weights),
    `columns` (the metadata columns encoded), `normalize` (asked for L2 normalisation), `unit_norm` (every row
    has norm 1 within 1e-3), `dim`, `count`; files from elsewhere may carry any meta. `cached`: this call found
    the vectors in the on-disk cache instead of running the model (not part of the meta, not written).
    """

    ids: np.ndarray  # str [n_items]
    vectors: Float[np.ndarray, "n_items d_text"]  # float32
    meta: dict = field(default_factory=dict)
    cached: bool = False

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def is_embedding_file(source: str | Path) -> bool:
    """Whether `source` names a precomputed embedding file (by its suffix; it need not exist yet)."""
    path = Path(source).expanduser()
    return path.suffix.lower() in EMBEDDING_SUFFIXES and not path.is_dir()


def _examples(values, k: int = 3) -> str:
    return ", ".join(map(str, list(values)[:k]))


def validated(ids, vectors, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids as str [n], vectors as float32 [n, d]) after every check a file or an encoder output must pass;
    `where` starts each error message (a path, or "the embeddings")."""
    vectors = np.asarray(vectors)
    if vectors.dtype.kind not in "fiu":  # not bool, complex, strings or objects
        raise UserError(f"{where}: the vectors are not numbers (dtype {vectors.dtype})")
    if vectors.ndim != 2:
        raise UserError(f"{where}: the vectors must be a 2-D array [items, dimensions], got shape {vectors.shape}")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise UserError(f"{where}: the ids must be a list, got shape {ids.shape}")
    # object arrays are what pandas (and this project's vocabularies) hold strings in: fine if every entry is one
    plain = ids.dtype.kind in "USiu" or (ids.dtype.kind == "O" and all(isinstance(i, (str, int)) for i in ids))
    if not plain:
        raise UserError(f"{where}: the item ids must be strings or integers (dtype {ids.dtype})")
    ids = ids.astype(str)
    if len(ids) != len(vectors):
        raise UserError(f"{where}: {len(ids):,} item ids but {len(vectors):,} vectors")
    if len(ids) == 0:
        raise UserError(f"{where}: no items")
    if vectors.shape[1] == 0:
        raise UserError(f"{where}: the vectors have 0 dimensions")
    if (ids == "").any():
        raise UserError(f"{where}: {int((ids == '').sum()):,} empty item ids")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"{where}: {int((counts > 1).sum()):,} duplicate item ids (e.g. {_examples(unique[counts > 1])})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, caught just below
        vectors = vectors.astype(np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise UserError(f"{where}: {int(bad.sum()):,} vectors hold NaN or infinite values (e.g. item "
                        f"{_examples(ids[bad])})")
    return ids, np.ascontiguousarray(vectors)


def unit_norm(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3))


# --- files --------------------------------------------------------------------------------------------------

def ids_path(path: Path) -> Path:
    """`X.npy` → `X.ids.txt` (one id per line, in row order)."""
    return path.with_suffix(".ids.txt")


def meta_path(path: Path) -> Path:
    """`X.npy` → `X.meta.json` (optional)."""
    return path.with_suffix(".meta.json")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise UserError(f"{path}: unknown embedding file type {suffix or '(none)'!r} "
                        f"(one of {', '.join(EMBEDDING_SUFFIXES)})")
    return suffix


def _cannot_read(path: Path, e: Exception) -> UserError:
    return UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from circuits.data.readers import ITEM_COLUMNS

    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise _cannot_read(path, e) from None
    names = table.column_names
    id_col = next((c for c in ITEM_COLUMNS if c in names), None)
    vec_col = next((c for c in ("embedding", "vector") if c in names), None)
    if id_col is None or vec_col is None:
        raise UserError(f"{path}: needs an item_id and an embedding column (columns: {', '.join(names)})")
    ids = table.column(id_col).combine_chunks()
    if ids.null_count:
        raise UserError(f"{path}: {ids.null_count:,} rows have no item id")
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
        raise UserError(f"{path}: column {id_col!r} is {ids.type}, not strings or integers")
    col = table.column(vec_col).combine_chunks()
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise UserError(f"{path}: column {vec_col!r} is {t}, not a list of numbers per row")
    if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise UserError(f"{path}: column {vec_col!r} holds {t.value_type}, not numbers")
    if col.null_count:
        raise UserError(f"{path}: {col.null_count:,} rows have no vector")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    id_values = ids.to_numpy(zero_copy_only=False).astype(str)
    if len(lengths) and (lengths != lengths[0]).any():
        odd = np.flatnonzero(lengths != lengths[0])
        raise UserError(f"{path}: ragged vectors: item {id_values[0]} has {lengths[0]} values, item "
                        f"{id_values[odd[0]]} {lengths[odd[0]]} ({len(odd):,} rows differ from the first)")
    values = pc.list_flatten(col)
    if values.null_count:
        raise UserError(f"{path}: {values.null_count:,} missing values inside the vectors")
    d = int(lengths[0]) if len(lengths) else 0
    vectors = values.to_numpy(zero_copy_only=False).reshape(len(lengths), d)
    raw = (table.schema.metadata or {}).get(META_KEY)
    return id_values, vectors, json.loads(raw) if raw else {}


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    ids_file = ids_path(path)
    if not ids_file.exists():
        raise UserError(f"{path}: its ids file {ids_file.name} is missing (one item id per line, in row order)")
    try:
        vectors = np.load(path, allow_pickle=False)
        lines = ids_file.read_text(encoding="utf-8").split("\n")
    except (OSError, ValueError, UnicodeDecodeError) as e:  # ValueError: an object array (needs pickle)
        raise _cannot_read(path, e) from None
    if lines and lines[-1] == "":  # the final newline (read_text has turned Windows line ends into "\n")
        lines = lines[:-1]
    ids = np.array(lines, dtype=str)
    meta = {}
    if meta_path(path).exists():
        try:
            meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise _cannot_read(meta_path(path), e) from None
    return ids, vectors, meta


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("ids", "vectors", "meta") if k in z.files}
            found = z.files
    except (OSError, ValueError, EOFError) as e:  # ValueError: object arrays (they need pickle)
        raise _cannot_read(path, e) from None
    if "ids" not in arrays or "vectors" not in arrays:
        raise UserError(f"{path}: needs arrays 'ids' and 'vectors' (found: {', '.join(found) or 'none'})")
    try:
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except ValueError as e:
        raise _cannot_read(path, e) from None
    return arrays["ids"], arrays["vectors"], meta


def read_embeddings(path: str | Path) -> ItemEmbeddings:
    """Read an embedding file (.parquet, .npy + .ids.txt, .npz; see the module docstring), checked."""
    path = Path(path).expanduser()
    reader = {".parquet": _read_parquet, ".npy": _read_npy, ".npz": _read_npz}[_suffix(path)]
    if not path.is_file():
        raise UserError(f"embedding file not found: {path}")
    ids, vectors, meta = reader(path)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: its meta is not a JSON object")
    ids, vectors = validated(ids, vectors, str(path))
    meta = {**meta, "file": str(path), "dim": int(vectors.shape[1]), "count": len(ids)}
    return ItemEmbeddings(ids, vectors, meta)


def _replace_atomically(write, final: Path) -> None:
    """`write(tmp)` then rename over `final`: readers see the old file or the new one, never half of one."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_embeddings(emb: ItemEmbeddings, path: str | Path) -> Path:
    """Write `emb` in the format of `path`'s suffix (.parquet, .npy + .ids.txt + .meta.json, .npz), atomically
    per file (for .npy the ids and meta files are renamed into place before the array). Returns `path`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    suffix = _suffix(path)
    ids, vectors = validated(emb.ids, emb.vectors, "the embeddings")
    meta = json.dumps(emb.meta, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        n, d = vectors.shape
        big = n * d >= 2**31  # past int32 list offsets
        offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int64 if big else np.int32))
        column = (pa.LargeListArray if big else pa.ListArray).from_arrays(offsets, pa.array(vectors.ravel()))
        table = pa.table({"item_id": pa.array(ids, pa.string()), "embedding": column})
        table = table.replace_schema_metadata({META_KEY: meta.encode()})
        _replace_atomically(lambda tmp: pq.write_table(table, tmp), path)
    elif suffix == ".npy":
        _replace_atomically(lambda tmp: tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8"),
                            ids_path(path))
        _replace_atomically(lambda tmp: tmp.write_text(meta + "\n", encoding="utf-8"), meta_path(path))

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
                np.save(f, vectors)

        _replace_atomically(save, path)
    else:
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, ids=ids, vectors=vectors, meta=np.array(meta))

        _replace_atomically(save, path)
    return path


# --- rows in a vocabulary's order ---------------------------------------------------------------------------

def align(emb: ItemEmbeddings, item_ids, what: str = "the vocabulary", dim: int | None = None,
          ) -> Float[np.ndarray, "d_vocab d_text"]:
    """Rows of `emb` in the order of a vocabulary: `item_ids` [d_vocab] with entry 0 the padding id "<pad>"
    (row 0 = zeros: padding has no text) and entries 1.. the item ids. Returns float32 [d_vocab, d_text].

    Every item must be covered, else a one-line `UserError` with the count and a few missing ids; `dim`, if
    given, is the dimension a model reads (a run's `d_text`), checked first. `what` names the vocabulary in
    the messages (e.g. "the items of ml-1m-5core")."""
    item_ids = np.asarray(item_ids).astype(str)
    if len(item_ids) == 0 or item_ids[0] != PAD_ID:
        raise ValueError(f"item_ids[0] must be the padding id {PAD_ID!r} (a vocabulary, see circuits.data)")
    if dim is not None and emb.dim != dim:
        raise UserError(f"{what}: the embeddings have {emb.dim} dimensions, the run's model reads {dim}")
    row = {item: i for i, item in enumerate(emb.ids.tolist())}
    wanted = item_ids[1:]
    index = np.array([row.get(item, -1) for item in wanted.tolist()], dtype=np.int64)
    missing = wanted[index < 0]
    if len(missing):
        raise UserError(f"{what}: the embeddings cover {len(wanted) - len(missing):,} of {len(wanted):,} items; "
                        f"missing e.g. {_examples(missing)}")
    out = np.zeros((len(item_ids), emb.dim), dtype=np.float32)
    out[1:] = emb.vectors[index]
    return out
