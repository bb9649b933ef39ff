"""Benchmark: exact top pairs of the L0, OV and QK circuits over a large vocabulary, with and without pruning.

    python benchmarks/pairs_large.py                                   # 1,000,000 items, top 100
    python benchmarks/pairs_large.py --items 100000 --unpruned-rows 0  # every row of the unpruned search too

Builds a 2-layer model over N items (2 heads, d_model 64, d_head 32) and times `top_pairs(left, right, k)` on the
circuits L0 (W_E W_U, rank 64), OV:L0H0 and QK:L0H0 (rank 32), exact both ways: pruned (the default:
Cauchy–Schwarz bounds on the factors' norms skip rows and columns that cannot reach the k-th value) and unpruned
(every row × every column, the running threshold only). Two kinds of weights:

- `random`: as initialised. Every item has about the same norm, so the bound prunes almost nothing: the worst
  case for pruning (and unlike a trained model);
- `zipf`: trained-like, W_E rows and W_U columns scaled by popularity^POWER (Zipf popularity over a random
  order of the items, scaled to mean square 1), as popular items of a trained recommender have larger vectors.

The unpruned search does the same work for every block of rows (its cost is linear in the rows visited), so
by default it is timed on its first --unpruned-rows rows and scaled up to all rows (labelled `extrapolated`);
--unpruned-rows 0 runs it whole (about 15 min per circuit at a million items on 2 cores). Each measurement runs
in a fresh process, so its peak memory (resident set, above the process after building the model) is its own.
Where both searches ran whole, the script also checks that they return the same pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.config import ModelConfig  # noqa: E402
from circuits.interp.circuit_pairs import _block_rows, _top_global, circuit_factors, top_pairs  # noqa: E402
from circuits.model import build_model  # noqa: E402

CIRCUITS = ("L0", "OV:L0H0", "QK:L0H0")


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def model_for(items: int, weights: str, power: float):
    model = build_model(ModelConfig(d_vocab=items + 1, n_ctx=50, n_layers=2, n_heads=2, d_model=64, d_head=32),
                        seed=0).eval()
    if weights == "zipf":
        rng = np.random.default_rng(0)
        popularity = 1.0 / rng.permutation(np.arange(1, items + 2))  # Zipf over a random order of the items
        scale = torch.from_numpy(popularity**power).float()
        scale /= scale.square().mean().sqrt()
        with torch.no_grad():
            model.W_E.mul_(scale[:, None])
            model.W_U.mul_(scale[None, :])
    return model


def child(args) -> None:
    """One measurement, printed as JSON: seconds (scaled to all rows if only some were visited), peak MB."""
    torch.set_num_threads(args.threads)
    model = model_for(args.items, args.weights, args.power)
    left, right = (t.detach().contiguous() for t in circuit_factors(model, args.circuit))
    keep = torch.ones(left.shape[0], dtype=torch.bool)
    keep[0] = False
    base = rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        if args.mode == "pruned":
            rows, cols, vals = top_pairs(left, right, args.top)
            share = 1.0
        else:
            n_rows = args.items
            limit = None if args.unpruned_rows == 0 else args.unpruned_rows
            rows, cols, vals = _top_global(left, right, args.top, False, keep, 1024, False, row_limit=limit)
            step = _block_rows(1024, n_rows)
            visited = n_rows if limit is None else min(n_rows, -(-limit // step) * step)
            share = visited / n_rows
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds / share, "share": share, "peak_mb": peak - base, "base_mb": base,
                      "pairs": [rows.tolist(), cols.tolist(), vals.tolist()] if share == 1.0 else None}))


def measure(args, circuit: str, weights: str, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--items", str(args.items), "--top", str(args.top), "--circuit",
           circuit, "--weights", weights, "--power", str(args.power), "--mode", mode, "--unpruned-rows",
           str(args.unpruned_rows), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--weights", nargs="+", default=["zipf", "random"], choices=["zipf", "random"])
    p.add_argument("--power", type=float, default=0.5, help="zipf weights: norm ∝ popularity^POWER (default 0.5)")
    p.add_argument("--circuits", nargs="+", default=list(CIRCUITS))
    p.add_argument("--unpruned-rows", type=int, default=20_000,
                   help="time the unpruned search on this many rows and scale up (0: all rows; default 20000)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--circuit", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.weights = args.weights[0]
        return child(args)
    print(f"{args.items:,} items, top {args.top}, {args.threads} threads; seconds (peak MB above the model)")
    print(f"{'weights':>8} {'circuit':>8} {'pruned s':>9} {'MB':>6} {'unpruned s':>11} {'MB':>6} {'pruned/unpruned':>16}")
    for weights in args.weights:
        for circuit in args.circuits:
            pr = measure(args, circuit, weights, "pruned")
            un = measure(args, circuit, weights, "unpruned")
            note = "" if un["share"] == 1.0 else f"  (unpruned extrapolated from {un['share']:.1%} of the rows)"
            if un["pairs"] is not None:
                note += "  same pairs" if pr["pairs"] == un["pairs"] else "  DIFFERENT PAIRS"
            print(f"{weights:>8} {circuit:>8} {pr['seconds']:9.1f} {pr['peak_mb']:6.0f} {un['seconds']:11.1f} "
                  f"{un['peak_mb']:6.0f} {pr['seconds'] / un['seconds']:16.4f}{note}", flush=True)


if __name__ == "__main__":
    main()
