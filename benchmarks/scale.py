"""Benchmark: the whole pipeline at 10k / 100k / 1M documents (≈ 1M / 10M / 50M interactions), stage by stage.

    python benchmarks/scale.py --sizes 10k 100k 1m --work /tmp/scale          # all three (about an hour on 2 cores)
    python benchmarks/scale.py --sizes 10k --work /tmp/scale-small            # a few minutes

Every stage is one command in its own process, timed from the shell (wall seconds) with its peak memory (the
process's max RSS; under torchrun, the largest of the launcher and its ranks):

    generate    python -m circuits.synthetic --preset production --n-docs D --n-users U --out DATA
    prep        loading DATA with an empty cache (DuckDB, out of core: encode, sort, memory-map)
    prep again  the same with the cache in place (memory-mapped, nothing read)
    train ×1    python -m circuits.train --data DATA --layers 2 … --epochs 1 --steps-per-epoch S (one process)
    train ×2    the same under torchrun --nproc_per_node 2 (gloo; same global batch)
    evaluate    python -m circuits.evaluate RUN --eval-users N (full ranking over every item, N users)
    decompose   python -m circuits.decompose RUN --all --eval-users N --out FOLDER (partitioned Parquet)
    pairs       python -m circuits.pairs RUN --top 100 (L0, exact)
    report      python -m circuits.report RUN --eval-users N

Training runs S steps (default: one pass, or at most --max-steps) and states the epoch time: measured when S is a
whole pass, otherwise projected as (steps per pass) × (seconds per step), labelled "projected". On a 2-core machine
two processes share the same two cores: the 2-process row is a check that data-parallel training runs at this
size, not a speed-up. Prints a Markdown table (and writes RESULTS.json in --work), with the growth of every stage
from the middle size to the largest as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SIZES = {"10k": (10_000, 20_000), "100k": (100_000, 200_000), "1m": (1_000_000, 1_000_000)}  # documents, users


def run(cmd: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run a command; wall seconds and peak RSS (the largest of the process and its waited-for children)."""
    t0 = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log.read_text()[-2000:] if log else ""
        raise SystemExit(f"failed ({wall:.0f} s): {' '.join(cmd)}\n{tail}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024}


def stages(size: str, work: Path, args) -> list[dict]:
    docs, users = SIZES[size]
    py = sys.executable
    data, cache = work / f"data-{size}", work / f"cache-{size}"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache, ignore_errors=True)
    env = {"CIRCUITS_CACHE": str(cache)}
    rows = []

    def stage(name: str, cmd: list[str], extra_env: dict | None = None, **info) -> dict:
        print(f"[{size}] {name} …", file=sys.stderr, flush=True)
        r = run(cmd, {**env, **(extra_env or {})}, logs / f"{size}-{name.replace(' ', '_')}.log")
        row = {"size": size, "stage": name, **r, **info}
        rows.append(row)
        print(f"[{size}] {name}: {r['wall_s']:.1f} s, {r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
        return row

    stage("generate", [py, "-m", "circuits.synthetic", "--preset", "production", "--n-docs", str(docs), "--n-users",
                       str(users), "--mean-length", "50", "--out", str(data), "--quiet"])
    load = [py, "-c", f"from circuits.data import load_dataset; ds = load_dataset({str(data)!r}, progress=False); "
            "print(ds.summary())"]
    stage("prep", load)
    stage("prep again", load)
    summary = subprocess.run(load, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True).stdout
    per_pass = -(-users // args.batch_size)  # batches of a pass (every generated user has a training part)
    steps = min(per_pass, args.max_steps) if args.max_steps else 0  # 0: one whole pass
    common = ["--data", str(data), "--layers", "2", "--n-ctx", "50", "--batch-size", str(args.batch_size),
              "--negatives", "512", "--epochs", "1", "--steps-per-epoch", str(steps), "--eval-users",
              str(args.eval_users), "--quiet"]
    runs = {}
    for procs in args.processes:
        out = work / f"run-{size}-x{procs}"
        launch = [py] if procs == 1 else [py, "-m", "torch.distributed.run", "--standalone",
                                           f"--nproc_per_node={procs}"]
        threads = {"OMP_NUM_THREADS": str(max(1, args.threads // procs))}
        row = stage(f"train x{procs}", [*launch, "-m", "circuits.train", *common, "--out", str(out), "--overwrite"],
                    threads)
        epoch = pd.read_csv(out / "epochs.csv").iloc[0]
        done = int(epoch["steps"])
        whole = per_pass if steps else done
        metrics = json.loads((out / "metrics.json").read_text())
        policy = json.loads((out / "config.json").read_text())["train"]["resolved_seen_policy"]
        test = metrics["model"]["test"][f"full/{policy}"]
        row.update(steps=done, step_s=float(epoch["step_seconds"]), steps_per_pass=whole,
                   epoch_min=float(epoch["step_seconds"]) / done * whole / 60, projected=bool(done < whole),
                   test_ndcg10=test["NDCG@10"], test_hr10=test["HR@10"], policy=policy,
                   eval_users=metrics.get("user_sample", {}).get("users"))
        runs[procs] = out
    run_dir = runs[min(runs)]
    n = ["--eval-users", str(args.eval_users)]
    stage("evaluate", [py, "-m", "circuits.evaluate", str(run_dir), *n])
    stage("decompose --all", [py, "-m", "circuits.decompose", str(run_dir), "--all", *n, "--out",
                              str(work / f"ranks-{size}")])
    stage("pairs --top 100", [py, "-m", "circuits.pairs", str(run_dir), "--top", "100"])
    stage("report", [py, "-m", "circuits.report", str(run_dir), *n, "--quiet", "--out",
                     str(work / f"report-{size}.html")])
    for r in rows:
        r["data"] = summary.strip()
    return rows


def table(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    sizes = list(dict.fromkeys(df["size"]))
    lines = ["| stage | " + " | ".join(f"{s} time · peak" for s in sizes)
             + (f" | {sizes[-2]} → {sizes[-1]} time ratio |" if len(sizes) > 1 else " |"),
             "|---|" + "---|" * (len(sizes) + (1 if len(sizes) > 1 else 0))]
    for stage in dict.fromkeys(df["stage"]):
        cells, walls = [], []
        for s in sizes:
            r = df[(df["size"] == s) & (df["stage"] == stage)]
            if not len(r):
                cells.append("–")
                walls.append(None)
                continue
            r = r.iloc[0]
            cell = f"{r['wall_s']:.1f} s · {r['peak_mb'] / 1024:.2f} GB"
            if "epoch_min" in r and pd.notna(r.get("epoch_min")):
                cell += f" ({r['steps']} steps, {r['step_s'] / r['steps']:.3f} s/step; epoch " + \
                        f"{r['epoch_min']:.1f} min{' projected' if r['projected'] else ''})"
            cells.append(cell)
            walls.append(r["epoch_min"] * 60 if "epoch_min" in r and pd.notna(r.get("epoch_min")) else r["wall_s"])
        ratio = f" | {walls[-1] / walls[-2]:.1f}×" if len(sizes) > 1 and walls[-1] and walls[-2] else \
            (" | –" if len(sizes) > 1 else "")
        lines.append(f"| {stage} | " + " | ".join(cells) + ratio + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["10k", "100k", "1m"], choices=list(SIZES))
    p.add_argument("--work", type=Path, default=Path("/tmp/scale"), help="folder for data, caches, runs, logs")
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2], help="training processes to measure")
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (split between processes)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-steps", type=int, default=0, help="training steps per run (default 0: one whole pass)")
    p.add_argument("--eval-users", type=int, default=5_000, help="users of validation, evaluate, decompose, report")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        rows += stages(size, args.work, args)
        (args.work / "RESULTS.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; batch {args.batch_size}, n_ctx 50, 512 sampled "
          f"negatives, 2 layers, d_model 64; evaluation on {args.eval_users:,} users\n")
    print(table(rows))


if __name__ == "__main__":
    main()
