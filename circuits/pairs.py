"""`python -m circuits.pairs RUN_DIR --circuit …`: top item pairs of a circuit (L0 bigram, a head's OV or QK)."""

from __future__ import annotations

import json
import sys

from circuits.cli import ArgumentParser, add_run_data_arguments, run_cli, run_dataset


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m circuits.pairs",
                       description="Top item pairs of a circuit (L0 bigram, a head's OV or QK), exact, computed "
                       "blockwise (the item × item table is never built); rows and columns whose norms cannot reach "
                       "the top are skipped (Cauchy–Schwarz: most of them where norms vary with popularity).")
    p.add_argument("run_dir")
    p.add_argument("--circuit", default="L0", help="L0 | OV:L0H1 | QK:L0H1 (default L0)")
    p.add_argument("--top", type=int, default=50, help="pairs in all, or per source with --per-row (default 50)")
    p.add_argument("--per-row", action="store_true", help="top pairs of every source item instead of globally")
    p.add_argument("--exclude-self", action="store_true", help="leave out pairs (a, a)")
    p.add_argument("--min-count", type=int, default=0, help="only items with at least this many training occurrences")
    p.add_argument("--max-items", type=int, default=0, metavar="N",
                   help="only the N most frequent items (training occurrences; default 0: no limit)")
    p.add_argument("--json", action="store_true")
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from circuits.data.synthetic import ground_truth_of
    from circuits.interp.circuit_pairs import pair_table, recovery_precision
    from circuits.runs import load_run

    run = load_run(args.run_dir)
    ds = run_dataset(run, args)
    table = pair_table(run.model, ds, args.circuit, args.top, args.per_row, args.exclude_self, args.min_count,
                       args.max_items)
    truth = ground_truth_of(run.data_source(args.data), run.config["data"]["options"].get("seed", 0))
    # the planted bigrams: series parts (the small generator) or every document's successor (the production
    # preset, when ground_truth.json lists all of them; it stores the first 10,000)
    planted, what = None, ""
    if truth and "series_pairs" in truth:
        planted, what = truth["series_pairs"], "planted series pairs (part k → k+1)"
    elif truth and len(truth.get("successor_pairs", [])) >= truth.get("n_docs", float("inf")):
        planted, what = truth["successor_pairs"], "planted successor pairs (document → its successor)"
    recovery = recovery_precision(table, planted) if planted is not None else None
    if args.json:
        print(json.dumps({"pairs": table.to_dict(orient="records"), "planted_precision": recovery,
                          "planted_series_precision": recovery if "series" in what else None},
                         indent=1, default=str))
        return 0
    print(table.drop(columns=["circuit", "source_id", "target_id"]).to_string(index=False, float_format="%.3f",
                                                                              max_colwidth=45))
    if recovery is not None:
        print(f"\n{what} among these {len(table)} pairs: precision {recovery:.3f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
