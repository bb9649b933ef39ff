"""Benchmark: does anything at small scale get slower or change its results? This tree against another revision.

    python benchmarks/small_scale.py --base 693a43c --work /tmp/small-vs --data synthetic
    python benchmarks/small_scale.py --base 693a43c --work /tmp/small-vs --data ../shared/data/ml-1m-5core

Checks the base revision out into a git worktree and runs the same commands in both trees, alternating (base,
this, base, this … so drifting machine load hits both alike; --repeat rounds, medians shown), each in its own
process with its own cache, emptied at the start of every round:
a 2-layer training of --epochs E (default command otherwise), then evaluate, decompose --all, pairs and the report
of that run. Prints per stage the wall time of each tree and their ratio (this / base), and whether the test
metrics (every split, protocol and metric of metrics.json) are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed in {cwd}: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the revision to compare against (e.g. the last release)")
    p.add_argument("--work", type=Path, default=Path("/tmp/small-vs"))
    p.add_argument("--data", default="synthetic")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3, help="rounds of every stage; the median wall time is shown")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    base = args.work / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                   capture_output=True)
    py = sys.executable
    trees = {"base": base, "this": REPO}
    times: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
    try:
        for name in trees:
            shutil.rmtree(args.work / f"cache-{name}", ignore_errors=True)
        data = str(Path(args.data).resolve()) if args.data != "synthetic" else "synthetic"
        stages = [
            ("train", lambda run: [py, "-m", "circuits.train", "--layers", "2", "--data", data, "--epochs",
                                   str(args.epochs), "--out", str(run), "--overwrite", "--quiet"]),
            ("evaluate", lambda run: [py, "-m", "circuits.evaluate", str(run)]),
            ("decompose --all", lambda run: [py, "-m", "circuits.decompose", str(run), "--all", "--out",
                                             str(run.with_suffix(".ranks.parquet"))]),
            ("pairs", lambda run: [py, "-m", "circuits.pairs", str(run), "--top", "100"]),
            ("report", lambda run: [py, "-m", "circuits.report", str(run), "--quiet", "--out",
                                    str(run.with_suffix(".html"))]),
        ]
        for round_ in range(args.repeat):
            for name in trees:  # every round from an empty cache: the first run of a stage builds it
                shutil.rmtree(args.work / f"cache-{name}", ignore_errors=True)
            for stage, cmd in stages:
                for name, tree in trees.items():  # alternating, stage by stage
                    run = args.work / f"run-{name}"
                    env = {"CIRCUITS_CACHE": str(args.work / f"cache-{name}")}
                    times[name].setdefault(stage, []).append(timed(cmd(run), tree, env))
                    print(f"round {round_} {stage} [{name}]: {times[name][stage][-1]:.1f} s", file=sys.stderr,
                          flush=True)
        m = {n: json.loads((args.work / f"run-{n}" / "metrics.json").read_text()) for n in trees}
        same = {k: m["base"][k] == m["this"][k] for k in ("model", "baselines")}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, capture_output=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; data {args.data}; base {args.base}\n")
    print(f"median of {args.repeat} alternating rounds\n")
    print("| stage | base | this | this / base |\n|---|---|---|---|")
    for stage in times["base"]:
        b, t = statistics.median(times["base"][stage]), statistics.median(times["this"][stage])
        print(f"| {stage} | {b:.1f} s | {t:.1f} s | {t / b:.2f} |")
    print(f"\nmetrics.json identical: model {same['model']}, baselines {same['baselines']}")


if __name__ == "__main__":
    main()
