"""Benchmark: top pairs of the L0 bigram circuit over a large vocabulary, blockwise, vs matmul throughput.

    python benchmarks/pairs_large.py --items 100000 --top 100

Builds a 1-layer model over N items (weights as initialised; the work does not depend on their values), times
`top_pairs` on the L0 circuit W_E W_U (N × d_model × N multiply-adds plus the running top-k), reports its
effective GFLOP/s as a fraction of a plain blocked matmul of the same shapes measured in the same run, and
the process's peak memory. The dense N × N table (40 GB at N = 100,000) is never built.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.config import ModelConfig  # noqa: E402
from circuits.interp.circuit_pairs import BLOCK_DEFAULT, circuit_factors, top_pairs  # noqa: E402
from circuits.model import build_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--d-model", type=int, default=64)
    args = p.parse_args()
    model = build_model(ModelConfig(d_vocab=args.items + 1, n_ctx=50, n_layers=1, d_model=args.d_model)).eval()
    left, right = (t.contiguous() for t in circuit_factors(model, "L0"))
    flops = 2 * left.shape[0] * left.shape[1] * right.shape[1]
    with torch.no_grad():
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        rows, cols, vals = top_pairs(left, right, args.top)
        t_pairs = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        for lo in range(0, left.shape[0], BLOCK_DEFAULT):  # the same multiplies, nothing else
            (left[lo : lo + BLOCK_DEFAULT] @ right).max()
        t_mm = time.perf_counter() - t0
    print(f"{args.items} items, d_model {args.d_model}, top {args.top}: pairs {t_pairs:.1f} s "
          f"({flops / t_pairs / 1e9:.1f} GFLOP/s effective); blocked matmul alone {t_mm:.1f} s "
          f"({flops / t_mm / 1e9:.1f} GFLOP/s); pairs runs at {t_mm / t_pairs:.2f} of matmul throughput; "
          f"peak memory {peak:.0f} MB (process after imports and model: {base:.0f} MB); threads {torch.get_num_threads()}")
    print(f"top pair: {int(rows[0])} -> {int(cols[0])} ({float(vals[0]):.3f})")


if __name__ == "__main__":
    main()
