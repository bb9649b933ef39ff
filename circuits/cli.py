"""What every command shares: the one error path, flags generated from the config dataclasses, and the
data arguments (a log to read, or the data of a run that may have moved).

Exit statuses, the same in every command: 0 done; 2 bad input (`UserError`: one `error: …` line on stderr,
nothing written); 130 interrupted. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from circuits.errors import UserError

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 2, 130


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call a command's `main`; turn `UserError` into `error: …` on stderr and exit status 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or EXIT_OK)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `error: …` line (usage stays available through --help)."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


# --- flags from dataclass fields ----------------------------------------------------------------------------

def add_config_arguments(group, cls) -> None:
    """One flag per field of `cls` that has help in its metadata (see `circuits.config.option`); the flag
    stores into `dest=field name`, so `config_from_args` can only ever read the field it belongs to."""
    for f in fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        flags = meta.get("flags", ("--" + f.name.replace("_", "-"),))
        kw: dict[str, Any] = {"dest": f.name, "default": f.default, "help": meta["help"]}
        if "action" in meta:
            kw["action"] = meta["action"]
        else:
            kw["type"] = meta.get("type", type(f.default))
            if "choices" not in meta:  # argparse lists the choices themselves
                kw["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()  # --layers LAYERS, not N_LAYERS
            kw["help"] += f" (default {f.default})"
            for key in ("choices", "nargs"):
                if key in meta:
                    kw[key] = meta[key]
        group.add_argument(*flags, **kw)


def config_from_args(cls, args: argparse.Namespace, **given: Any):
    """`cls(**fields)` from the parsed flags; `given` supplies the fields that no flag sets (derived ones).
    Every field must come from one or the other: a field with neither is a programming error, not a silent
    default."""
    missing = [f.name for f in fields(cls) if f.name not in given and not hasattr(args, f.name)]
    if missing:
        raise TypeError(f"{cls.__name__} fields set by no flag and not given: {missing}")
    return cls(**{f.name: given[f.name] if f.name in given else getattr(args, f.name) for f in fields(cls)})


# --- data ---------------------------------------------------------------------------------------------------

def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that say which log to read and how (the train command's)."""
    from circuits.data.names import DEFAULT_DATA, ENGINES, FORMATS, POOLS, TIE_BREAKS

    g = parser.add_argument_group("data")
    g.add_argument("--data",  # None = the default, so that an explicit --data (e.g. with --resume) can be told apart
                   help=f"'{DEFAULT_DATA}' (built-in document journeys) or a path: CSV/TSV/Parquet log (gzip ok) "
                        f"or a MovieLens folder (100K, 1M, latest); default {DEFAULT_DATA}; with --resume: where "
                        "the unfinished run's data is now, if it moved")
    g.add_argument("--format", default="auto", choices=FORMATS, help="log format (default: detected)")
    g.add_argument("--user-col", help="user column (default: user_id/userId/user…)")
    g.add_argument("--item-col", help="item column (default: item_id/movieId/item…)")
    g.add_argument("--time-col", help="timestamp column, numbers or ISO dates (default: timestamp/time/ts…)")
    g.add_argument("--items", help="item metadata file (CSV/TSV/Parquet/JSONL) with id and title columns (with "
                   "--resume: where the run's item file is now)")
    g.add_argument("--title-col", help="title column in the metadata (default: title/name)")
    g.add_argument("--kcore", type=int, default=0, help="drop users/items with fewer interactions, repeatedly")
    g.add_argument("--tie-break", default="file", choices=TIE_BREAKS,
                   help="order of equal timestamps: as in the file (default) or by item id")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    g.add_argument("--pool", default="log", choices=POOLS,
                   help="candidate items: those of the log (default), or also every item of the item metadata "
                        "without interactions (catalogue: documents a text model can recommend)")
    g.add_argument("--cold-items", type=float, default=0.0, metavar="SHARE",
                   help="cold-start split: hold this share of the log's items out of training; they remain only "
                        "as users' last items, i.e. as test targets never seen in training (default 0: none)")
    g.add_argument("--cold-seed", type=int, default=0, help="seed of the held-out items (default 0)")
    g.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how a log is read: pandas (in memory), duckdb (out of core, bounded memory: CSV/TSV/Parquet "
                        "tables and folders of Parquet partitions) or auto (default: duckdb for partition folders "
                        "and logs over 256 MB); the dataset is the same either way")


def data_options(args: argparse.Namespace) -> dict:
    """The `load_dataset` keyword arguments given by `add_data_arguments`' flags."""
    return {"format": args.format, "user_col": args.user_col, "item_col": args.item_col, "time_col": args.time_col,
            "items": args.items, "title_col": args.title_col, "kcore": args.kcore, "tie_break": args.tie_break,
            "seed": args.data_seed, "pool": args.pool, "cold_items": args.cold_items, "cold_seed": args.cold_seed,
            "engine": args.engine}


def data_source_arg(args: argparse.Namespace) -> str:
    """`--data`, or the built-in default when it was not given."""
    from circuits.data.names import DEFAULT_DATA

    return DEFAULT_DATA if args.data is None else args.data


def dataset_from_args(args: argparse.Namespace):
    from circuits.data import load_dataset

    return load_dataset(data_source_arg(args), **data_options(args))


def add_run_data_arguments(parser: argparse.ArgumentParser) -> None:
    """For commands that read a run: where its data is now, if not where the run recorded it."""
    g = parser.add_argument_group("the run's data (default: where the run recorded it)")
    g.add_argument("--data", metavar="PATH",
                   help="the run's log at another place (a copied run, moved data); the run's reading options "
                        "(format, columns, k-core, tie-break) still apply, and the data must match the checkpoint")
    g.add_argument("--items", metavar="PATH", help="the run's item metadata file at another place")


def add_user_sample_arguments(parser: argparse.ArgumentParser, what: str, default: int | None = 0) -> None:
    """`--eval-users N` and `--eval-seed S`: a seeded sample of users (`circuits.data.sequences.sample_eval_users`);
    `what` says what the sample is used for."""
    parser.add_argument("--eval-users", type=int, default=default, metavar="N",
                        help=f"{what} a seeded sample of N users (0 = all; default {default}); every item is still "
                             "ranked, and the sample is stated with the figures")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the --eval-users sample (default 0)")


def run_dataset(run, args: argparse.Namespace):
    """The run's dataset, from `--data`/`--items` when given, else from where the run recorded it."""
    return run.dataset(data=getattr(args, "data", None), items=getattr(args, "items", None))

