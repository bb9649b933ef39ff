"""Benchmark: embed N document titles with the packaged MiniLM, then again from the cache.

    python benchmarks/embed_titles.py --n 100000 --out /tmp/embed-bench

Writes N unique, readable titles ("The quiet history of chess openings, vol. 812"-like, seeded) to an items
file, then runs `python -m circuits.embed ITEMS --out FILE` twice, each in its own process with an empty or the
same embedding cache (`CIRCUITS_CACHE` under --out): wall time and peak memory (max RSS) of each, items per
second of the first. The first run loads the model and encodes; the second finds every vector in the cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORDS = {
    "adjective": ["quiet", "hidden", "practical", "curious", "essential", "forgotten", "modern", "gentle", "bold",
                  "surprising", "complete", "little", "honest", "visual", "patient", "radical"],
    "noun": ["guide", "history", "primer", "notes", "mistakes", "debate", "toolkit", "questions", "map", "tricks",
             "myths", "lessons", "field report", "interview", "case study", "checklist"],
    "topic": ["chess openings", "sourdough baking", "bird migration", "jazz harmony", "city cycling", "old maps",
              "deep-sea volcanoes", "typography", "wine regions", "quantum computing", "knitting patterns",
              "mountain rescue", "database indexes", "urban gardens", "film noir", "sailing knots"],
}


def titles(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, c = (rng.choice(WORDS[k], size=n) for k in ("adjective", "noun", "topic"))
    text = [f"The {x} {y} of {z}, vol. {i}" for i, (x, y, z) in enumerate(zip(a, b, c))]
    return pd.DataFrame({"item_id": [f"doc{i:07d}" for i in range(n)], "title": text})


def run(cmd: list[str], env: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="titles (default 100,000)")
    p.add_argument("--out", default="/tmp/embed-bench", help="scratch folder (replaced)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    items = out / "items.tsv"
    titles(args.n, args.seed).to_csv(items, sep="\t", index=False)
    env = {**os.environ, "CIRCUITS_CACHE": str(out / "cache")}
    cmd = [sys.executable, "-m", "circuits.embed", str(items), "--out", str(out / "emb.parquet"), "--quiet",
           "--batch-size", str(args.batch_size)]
    first = run(cmd, env)
    second = run(cmd, env)
    print(f"\n{args.n:,} titles, MiniLM (all-MiniLM-L6-v2), batch {args.batch_size}, {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores")
    print("| run | wall | peak memory | items/s |")
    print("|---|---|---|---|")
    print(f"| first (load + encode + write) | {first[0]:.1f} s | {first[1]:.0f} MB | {args.n / first[0]:,.0f} |")
    print(f"| second (cached) | {second[0]:.1f} s | {second[1]:.0f} MB | – |")


if __name__ == "__main__":
    main()
