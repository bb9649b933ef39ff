"""`python -m circuits.synthetic --out FOLDER`: write a synthetic data set to a folder.

Three presets: `small` (the default: the document-journey data set of `circuits.data.synthetic`, flags from
`SyntheticConfig`), `production` (`--preset production`: the partitioned-Parquet log of
`circuits.data.production`, ~50 million interactions by default, flags from `ProductionConfig`) and `planted`
(`--preset planted`: users moving along a planted cluster DAG, or a control without that order, for causal
discovery: `circuits.causal.planted`, flags from `PlantedConfig`). `--preset` is read first, then the arguments
are parsed by that preset's parser (the configs share flag names such as `--n-users` and `--seed`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from circuits.cli import ArgumentParser, add_config_arguments, config_from_args, run_cli
from circuits.data.synthetic import SyntheticConfig

PRESETS = ("small", "production", "planted")
PROG = "python -m circuits.synthetic"


def _add_preset_argument(p: ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESETS, default="small",
                   help="small (default): the document-journey data set, TSV; production: ~50M interactions as "
                        f"partitioned Parquet (its flags: {PROG} --preset production --help); planted: journeys "
                        f"along a planted cluster DAG, for causal discovery ({PROG} --preset planted --help)")


def build_parser(preset: str = "small") -> ArgumentParser:
    if preset == "production":
        from circuits.data.production import ProductionConfig

        p = ArgumentParser(prog=f"{PROG} --preset production",
                           description="Write the production-sized synthetic log (interactions/part-*.parquet: "
                           "user_id, item_id, timestamp; items.parquet: item_id, title, text, topic; "
                           "ground_truth.json) to a folder, atomically, in bounded memory.",
                           epilog=f"The small preset's flags: {PROG} --help")
        _add_preset_argument(p)
        p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        add_config_arguments(p.add_argument_group("generator (ProductionConfig)"), ProductionConfig)
        return p
    if preset == "planted":
        from circuits.causal.planted import PlantedConfig

        p = ArgumentParser(prog=f"{PROG} --preset planted",
                           description="Write users' journeys along a planted cluster DAG (interactions.tsv.gz; "
                           "items.tsv with a cluster column; ground_truth.json with the DAG), or a control with "
                           "the same clusters and no order (--order shuffled / independent), to a folder, "
                           "atomically. Discover it with python -m analyses.causal FOLDER --labels cluster.",
                           epilog=f"The small preset's flags: {PROG} --help")
        _add_preset_argument(p)
        p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
        add_config_arguments(p.add_argument_group("generator (PlantedConfig)"), PlantedConfig)
        return p
    p = ArgumentParser(prog=PROG,
                       description="Write the synthetic document-journey data set (interactions.tsv.gz with a "
                       "mechanism column, items.tsv with titles, ground_truth.json) to a folder, atomically.",
                       epilog=f"The production preset (1M documents, 1M users, ~50M interactions as partitioned "
                       f"Parquet) and its flags: {PROG} --preset production --help")
    _add_preset_argument(p)
    p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    add_config_arguments(p.add_argument_group("generator (SyntheticConfig)"), SyntheticConfig)
    return p


def preset_of(argv: list[str]) -> str:
    """The `--preset` among the arguments (small when absent), read before the preset's own parser."""
    p = ArgumentParser(prog=PROG, add_help=False)
    _add_preset_argument(p)
    return p.parse_known_args(argv)[0].preset


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    preset = preset_of(argv)
    args = build_parser(preset).parse_args(argv)
    if preset == "production":
        return _production(args)
    if preset == "planted":
        return _planted(args)
    from circuits.data.synthetic import load_ground_truth, write

    cfg = config_from_args(SyntheticConfig, args)
    out = write(cfg, Path(args.out))
    truth = load_ground_truth(out)
    print(f"wrote {out}: {sum(truth['mechanisms'].values())} interactions; mechanisms {truth['mechanisms']}")
    return 0


def _production(args) -> int:
    from circuits.data.production import ProductionConfig, generate_production
    from circuits.data.synthetic import load_ground_truth

    cfg = config_from_args(ProductionConfig, args)
    began = time.perf_counter()
    out = generate_production(cfg, Path(args.out), progress=not args.quiet)
    truth = load_ground_truth(out)
    print(f"wrote {out}: {truth['n_interactions']:,} interactions, {cfg.n_users:,} users, {cfg.n_docs:,} documents, "
          f"{truth['n_parts']} parts in {time.perf_counter() - began:.1f} s")
    return 0


def _planted(args) -> int:
    from circuits.causal.planted import PlantedConfig, planted_log, write_planted

    cfg = config_from_args(PlantedConfig, args)
    data = planted_log(cfg)
    out = write_planted(data, Path(args.out))
    print(f"wrote {out}: {len(data.log):,} interactions, {cfg.n_users:,} users, {cfg.n_clusters} clusters × "
          f"{cfg.items_per_cluster} items, {int(data.dag.sum())} planted edges (order: {cfg.order})")
    return 0


if __name__ == "__main__":
    run_cli(main)
