"""`python -m circuits.report RUN_DIR [RUN_DIR …]`: write a self-contained HTML report."""

from __future__ import annotations

import sys
import time

from circuits.cli import ArgumentParser, add_run_data_arguments, run_cli


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m circuits.report",
        description="Write one self-contained HTML file (opens offline): for one run, its run card, rank by "
        "component, top document pairs, head scores, attention patterns and decompositions of chosen test "
        "users; for several runs on the same data, a comparison page; for a depth sweep folder (--sweep), "
        "NDCG@10 by depth over seeds with the learning curves; for a cluster DAG folder (--causal), the DAG.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    p.add_argument("--sweep", metavar="FOLDER", help="a depth sweep folder written by python -m analyses.depth")
    p.add_argument("--causal", metavar="FOLDER",
                   help="a cluster DAG folder written by python -m analyses.causal (and analyses.dag_logits): with "
                        "one run, a section of its report; alone, a page of its own")
    p.add_argument("--seq-ids", nargs="+", help="user ids to show (default: median, most helped and most hurt "
                   "by the attention layers)")
    p.add_argument("--out", help="HTML path (default reports/<run>.html or reports/compare-<runs>.html)")
    p.add_argument("--top", type=int, default=10, help="pairs listed per circuit (default 10)")
    p.add_argument("--min-count", type=int, default=10,
                   help="top pairs only among items with at least this many training occurrences (default 10)")
    p.add_argument("--window", type=int, default=30, help="last items of each history shown (default 30)")
    p.add_argument("--experiments", action="store_true",
                   help="one run: add the experiments (data diagnostics, order sensitivity, translation vector, "
                   "same-item attention)")
    p.add_argument("--eval-users", type=int, default=None, metavar="N",
                   help="rank section: a seeded sample of N test users (0 = all; default: all while users × items "
                   "≤ 5·10⁹, else 5·10⁹ / items users, e.g. 5,000 at a million items); every item is still ranked "
                   "and the section states the sample")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the --eval-users sample (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_data_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from circuits.report.build import build_report

    t0 = time.perf_counter()
    out = build_report(args.run_dirs, args.out, args.seq_ids, args.top, args.window, args.min_count,
                       args.experiments, progress=not args.quiet, sweep=args.sweep, data=args.data, items=args.items,
                       eval_users=args.eval_users, eval_seed=args.eval_seed, causal=args.causal)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
