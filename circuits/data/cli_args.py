"""The `--data …` arguments shared by every command that reads a log."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.data import DEFAULT_DATA, load_dataset
from circuits.data.readers import FORMATS
from circuits.data.sequences import SequenceDataset, TIE_BREAKS


def add_data_arguments(parser: argparse.ArgumentParser, default: str | None = DEFAULT_DATA) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=default,
                   help=f"'{DEFAULT_DATA}' (built-in document journeys) or a path: CSV/TSV/Parquet log (gzip ok) "
                        "or a MovieLens folder (100K, 1M, latest)" + (f"; default {default}" if default else ""))
    g.add_argument("--format", default="auto", choices=FORMATS, help="log format (default: detected)")
    g.add_argument("--user-col", help="user column (default: user_id/userId/user…)")
    g.add_argument("--item-col", help="item column (default: item_id/movieId/item…)")
    g.add_argument("--time-col", help="timestamp column, numbers or ISO dates (default: timestamp/time/ts…)")
    g.add_argument("--items", help="item metadata file (CSV/TSV/Parquet/JSONL) with id and title columns")
    g.add_argument("--title-col", help="title column in the metadata (default: title/name)")
    g.add_argument("--kcore", type=int, default=0, help="drop users/items with fewer interactions, repeatedly")
    g.add_argument("--tie-break", default="file", choices=TIE_BREAKS,
                   help="order of equal timestamps: as in the file (default) or by item id")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default 0)")


def data_record(args: argparse.Namespace) -> dict:
    """What a run records to rebuild its dataset: source (absolute path or 'synthetic') and options."""
    source = args.data if args.data == DEFAULT_DATA else str(Path(args.data).expanduser().resolve())
    options = {
        "format": args.format, "user_col": args.user_col, "item_col": args.item_col, "time_col": args.time_col,
        "items": str(Path(args.items).expanduser().resolve()) if args.items else None,
        "title_col": args.title_col, "kcore": args.kcore, "tie_break": args.tie_break, "seed": args.data_seed,
    }
    return {"source": source, "options": options}


def dataset_from_args(args: argparse.Namespace) -> SequenceDataset:
    rec = data_record(args)
    return load_dataset(rec["source"], **rec["options"])
