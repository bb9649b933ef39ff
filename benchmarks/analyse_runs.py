"""Benchmark: run every analysis command on finished runs and print wall time, peak memory and output size.

    python benchmarks/analyse_runs.py /tmp/bench-syn/L0 /tmp/bench-syn/L1 /tmp/bench-syn/L2 --out /tmp/analyses

Per run, each in its own process (peak memory = that process's max RSS): `decompose --seq-id` (the first test
user), `decompose --all` (the whole test split), `pairs --circuit L0 --top 100`, `heads`, and `report` (one
HTML file); then, for several runs, the comparison page. A failing command stops the benchmark with its
error line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", *cmd], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: python -m {' '.join(cmd)}\n{err.strip().splitlines()[-1] if err.strip() else ''}")
    return {"wall_s": time.perf_counter() - t0, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="/tmp/analyses", help="where reports and rank tables go")
    args = p.parse_args()
    from circuits.runs import load_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in args.runs:
        run = load_run(r)
        first = run.dataset().user_ids[0]
        name = f"{Path(r).parent.name}-{Path(r).name}"
        steps = {
            "decompose --seq-id": ["circuits.decompose", r, "--seq-id", str(first)],
            "decompose --all": ["circuits.decompose", r, "--all", "--out", str(out / f"{name}-ranks.parquet")],
            "pairs L0 top 100": ["circuits.pairs", r, "--circuit", "L0", "--top", "100"],
            **({"heads": ["circuits.heads", r]} if run.model.cfg.n_layers else {}),  # a 0-layer run has no heads
            "report": ["circuits.report", r, "--quiet", "--out", str(out / f"{name}.html")],
        }
        for step, cmd in steps.items():
            m = timed(cmd)
            size = (out / f"{name}.html").stat().st_size / 1e6 if step == "report" else None
            print(f"{r:40s} {step:20s} {m['wall_s']:6.1f} s {m['peak_mb']:7.0f} MB" +
                  (f" {size:5.1f} MB" if size else ""), flush=True)
    if len(args.runs) > 1:
        page = out / "compare.html"
        m = timed(["circuits.report", *args.runs, "--quiet", "--out", str(page)])
        print(f"{'comparison of all runs':40s} {'report':20s} {m['wall_s']:6.1f} s {m['peak_mb']:7.0f} MB "
              f"{page.stat().st_size / 1e6:5.1f} MB")


if __name__ == "__main__":
    main()
