"""Benchmark: id, text and hybrid models with the default command on one log, next to the baselines.

    python benchmarks/item_sides.py --data synthetic --layers 2 --minutes 5 --out /tmp/sides-syn
    python benchmarks/item_sides.py --data ../shared/data/ml-1m-5core --layers 2 --minutes 15 \\
        --out /tmp/sides-ml1m -- --text-cols title genres

Each model is `python -m circuits.train --layers L --data DATA --embed S --unembed S --max-minutes M` in its
own process (peak memory = that process's max RSS; the text models embed the items with MiniLM on first use,
cached afterwards, and that time is in the wall time, not in the training minutes). Arguments after `--` go to
every train command. Prints one table: test full ranking under the data's seen-item policy (and the other
policy), HR@10 / NDCG@10, for each model and for emb-mean, text-kNN, Markov and most-popular (the baselines of
the text run, which has the text embeddings); with a cold-start split (`-- --cold-items 0.15`) also the cold
and warm test targets apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDES = ("id", "text", "hybrid")
BASELINES = ("emb-mean", "text-knn", "markov", "most-popular")


def train(side: str, layers: int, data: str, out: Path, minutes: float, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "circuits.train", "--layers", str(layers), "--data", data, "--out", str(out),
           "--overwrite", "--quiet", "--max-minutes", str(minutes), "--embed", side, "--unembed", side, *extra]
    if side == "id":  # --text-cols and --embeddings are for the text sides only
        cmd = drop_text_flags(cmd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {' '.join(cmd)}")
    return {"wall_s": time.perf_counter() - t0, "peak_mb": usage.ru_maxrss / 1024}


def drop_text_flags(cmd: list[str]) -> list[str]:
    out, skip = [], False
    for a in cmd:
        if a in ("--text-cols", "--embeddings"):
            skip = True
            continue
        if skip and a.startswith("--"):
            skip = False
        if not skip:
            out.append(a)
    return out


def cells(by_split: dict, split: str, policy: str) -> str:
    m = by_split.get(split, {}).get(f"full/{policy}")
    return "– | –" if m is None else f"{m['HR@10']:.4f} | {m['NDCG@10']:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="'synthetic' (default) or a log path")
    p.add_argument("--out", default="/tmp/circuits-sides", help="folder for the runs")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--minutes", type=float, default=5.0, help="training-time budget per model")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("extra", nargs="*", help="after --: more arguments for every train command")
    args = p.parse_args()
    out = Path(args.out)
    results = {}
    for side in args.sides:
        stats = train(side, args.layers, args.data, out / side, args.minutes, args.extra)
        results[side] = (json.loads((out / side / "metrics.json").read_text()), stats)
    any_metrics = next(iter(results.values()))[0]
    policy = any_metrics["training"]["selection"].split()[1].split("/")[1]
    other = "included" if policy == "excluded" else "excluded"
    splits = [s for s in ("test", "test/cold", "test/warm") if s in any_metrics["model"]]
    users = any_metrics.get("users", {})
    print(f"\n{args.data}: {args.layers} layer(s), {args.minutes:g} min each, {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores; extra: {' '.join(args.extra) or '-'}")
    print("users: " + ", ".join(f"{s} {users.get(s, '?')}" for s in splits))
    head = " | ".join(f"{s} HR@10 | {s} NDCG@10" for s in splits)
    print(f"| system | {head} | test full/{other} NDCG@10 | train min (wall) | best epoch | peak memory |")
    print("|---|" + "---|" * (2 * len(splits) + 4))
    rows = [(side, m["model"], m["training"], stats) for side, (m, stats) in results.items()]
    text_run = next((m for side, (m, _) in results.items() if side != "id"), any_metrics)
    rows += [(name, text_run["baselines"][name], None, None) for name in BASELINES if name in text_run["baselines"]]
    for name, by_split, tr, stats in rows:
        row = " | ".join(cells(by_split, s, policy) for s in splits)
        extra_ndcg = by_split["test"][f"full/{other}"]["NDCG@10"]
        t = f"{tr['minutes']:.1f} ({stats['wall_s'] / 60:.1f})" if tr else "–"
        best = f"{tr['best_epoch']} / {tr['epochs_run']}" if tr else "–"
        mem = f"{stats['peak_mb']:.0f} MB" if stats else "–"
        label = f"{name} model" if tr else name
        print(f"| {label} | {row} | {extra_ndcg:.4f} | {t} | {best} | {mem} |")
    print(f"\nfull ranking under the data's policy ({policy}), pessimistic ties; checkpoints chosen on validation")


if __name__ == "__main__":
    main()
