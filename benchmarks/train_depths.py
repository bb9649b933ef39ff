"""Benchmark: train 0-, 1- and 2-layer models with the default command on a log and print one table.

    python benchmarks/train_depths.py --data ../shared/data/ml-1m-5core --out /tmp/bench

Each model is trained by `python -m circuits.train --layers L --data DATA --max-minutes M` in its own process
(peak memory = that process's max RSS). Prints, per model and baseline: test full-ranking HR@10/NDCG@10 with
seen items excluded and included, sampled HR@10/NDCG@10, training wall time and peak memory; then the
learning curve: test NDCG@10 of the best-on-validation weights as of each --snapshot-minutes mark
(checkpoints are still chosen on validation only; test is read after training).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from circuits.runs import load_run  # noqa: E402
from circuits.scoring.evaluator import model_scorer  # noqa: E402
from circuits.scoring.metrics import evaluate_split  # noqa: E402


def train(layers: int, data: str, out: Path, minutes: float, snapshots: list[float], extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "circuits.train", "--layers", str(layers), "--data", data, "--out", str(out),
           "--overwrite", "--quiet", "--max-minutes", str(minutes), "--epochs", "100000",
           "--snapshot-minutes", *map(str, snapshots), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {' '.join(cmd)}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "cmd": " ".join(cmd[1:])}


def snapshot_curve(run_dir: Path, marks: list[float]) -> dict[float, float]:
    run = load_run(run_dir)
    ds = run.dataset()
    test = ds.eval_split("test", run.model.cfg.n_ctx)
    curve = {}
    for m in marks:
        path = run_dir / "snapshots" / f"best@{m:g}min.safetensors"
        if path.exists():
            run.model.load_state_dict(load_file(str(path)))
            curve[m] = evaluate_split(model_scorer(run.model, test), test, ds.d_vocab, n_sampled=0)["full/excluded"]["NDCG@10"]
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="log path (e.g. ../shared/data/ml-1m-5core) or 'synthetic'")
    p.add_argument("--out", default="/tmp/circuits-bench", help="folder for the runs")
    p.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 15, 30],
                   help="training-time budget per model, in the order of --layers")
    p.add_argument("--snapshots", type=float, nargs="*", default=[2, 5, 10, 15, 20, 25, 30])
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more arguments for circuits.train")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out)
    rows, curves, runs = [], {}, {}
    for layers, minutes in zip(args.layers, args.minutes):
        run_dir = out / f"L{layers}"
        stats = train(layers, args.data, run_dir, minutes, [m for m in args.snapshots if m <= minutes], args.extra)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        runs[layers] = metrics
        rows.append((f"{layers}-layer", metrics["model"]["test"], stats, metrics["training"], metrics["model"]["valid"]))
        curves[layers] = snapshot_curve(run_dir, args.snapshots)
    for name, by_split in runs[args.layers[0]]["baselines"].items():
        rows.append((name, by_split["test"], None, None, by_split["valid"]))
    print(f"\n{args.data}: test split, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, torch {torch.__version__}")
    policy = runs[args.layers[0]]["training"]["selection"].split()[1]  # e.g. full/excluded
    print(f"| model | valid {policy} NDCG@10 | full excl. HR@10 | full excl. NDCG@10 | full incl. HR@10 "
          "| full incl. NDCG@10 | sampled HR@10 | sampled NDCG@10 | train time | best epoch | peak memory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m, stats, tr, valid in rows:
        ex, inc, sa = m["full/excluded"], m["full/included"], m["sampled"]
        time_s = f"{tr['minutes']:.1f} min ({stats['wall_s'] / 60:.1f} wall)" if stats else "-"
        best = f"{tr['best_epoch']} / {tr['epochs_run']}" if tr else "-"
        mem = f"{stats['peak_mb']:.0f} MB" if stats else "-"
        print(f"| {name} | {valid[policy]['NDCG@10']:.4f} | {ex['HR@10']:.4f} | {ex['NDCG@10']:.4f} | {inc['HR@10']:.4f} | {inc['NDCG@10']:.4f} "
              f"| {sa['HR@10']:.4f} | {sa['NDCG@10']:.4f} | {time_s} | {best} | {mem} |")
    print("\nlearning curve: test NDCG@10 (full, seen excluded) of the best-on-validation weights as of each minute")
    marks = sorted({m for c in curves.values() for m in c})
    print("| model | " + " | ".join(f"{m:g} min" for m in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for layers, c in curves.items():
        print(f"| {layers}-layer | " + " | ".join(f"{c[m]:.4f}" if m in c else "" for m in marks) + " |")


if __name__ == "__main__":
    main()
