"""`python -m circuits.synthetic --out FOLDER`: write the synthetic document-journey data set to a folder."""

from __future__ import annotations

import sys
from pathlib import Path

from circuits.cli import ArgumentParser, add_config_arguments, config_from_args, run_cli
from circuits.data.synthetic import SyntheticConfig


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m circuits.synthetic",
                       description="Write the synthetic document-journey data set (interactions.tsv.gz with a "
                       "mechanism column, items.tsv with titles, ground_truth.json) to a folder, atomically.")
    p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    add_config_arguments(p.add_argument_group("generator (SyntheticConfig)"), SyntheticConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    from circuits.data.synthetic import load_ground_truth, write

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(SyntheticConfig, args)
    out = write(cfg, Path(args.out))
    truth = load_ground_truth(out)
    print(f"wrote {out}: {sum(truth['mechanisms'].values())} interactions; mechanisms {truth['mechanisms']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
