"""Benchmark: exact vs HNSW vs IVF-PQ inner-product search over a large pool of synthetic text-like vectors.

    python benchmarks/faiss_pool.py                    # 1,000,000 documents × 384 dims, 1,000 queries
    python benchmarks/faiss_pool.py --n 100000         # a quick check

The documents imitate sentence embeddings (not uniform noise): topics of Zipf-distributed popularity, each a
unit centre; a document is its topic's centre plus a within-topic offset in a shared low-rank subspace (each
topic stretches the subspace's directions by its own log-normal scales) plus a little isotropic noise,
L2-normalised. Queries are documents drawn at random, perturbed by isotropic noise and normalised again.
Everything is seeded and generated in blocks, so memory stays about n · d · 4 bytes for the pool.

In one run, with the indexes of `circuits.scoring.retrieval.build_index` (search returns ids 1..n): an exact
IndexFlatIP (build time, queries per second of one batched top-10 search of all queries, best of --repeat;
its top 10 is the ground truth), HNSW (build time, then for each efSearch: qps, recall@10 against exact and
the speed-up over exact) and IVF-PQ likewise for each nprobe. Each index is freed before the next is built.
Prints a markdown table, the time of every phase, peak memory (ru_maxrss) and faiss's thread count, and
whether some HNSW setting reaches recall@10 ≥ --goal-recall at ≥ --goal-speedup × exact's qps.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.scoring.retrieval import ItemIndex, build_index, recall_at_k  # noqa: E402

BLOCK = 1 << 16  # documents generated per block (a block's temporaries: BLOCK × d floats, a few times)


class TextLikePool:
    """The generator's fixed parts for one seed: topic centres, popularity, subspace basis, per-topic scales."""

    def __init__(self, d: int, n_topics: int, rank: int, seed: int, spread: float = 0.8, noise: float = 0.3):
        rng = np.random.default_rng([seed, 0])
        self.d, self.seed, self.spread, self.noise = d, seed, spread, noise
        centres = rng.standard_normal((n_topics, d)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        weights = 1.0 / np.arange(1, n_topics + 1)  # Zipf popularity, a few big topics and a long tail
        self.popularity = weights / weights.sum()
        basis, _ = np.linalg.qr(rng.standard_normal((d, rank)))  # orthonormal columns
        self.basis = basis.T.astype(np.float32)  # [rank, d]
        # per topic, how far it stretches along each subspace direction (mean square 1, so ‖offset‖ ≈ spread)
        scales = rng.lognormal(0.0, 1.0, (n_topics, rank))
        self.scales = (scales / np.sqrt((scales**2).mean(1, keepdims=True) * rank)).astype(np.float32)

    def fill(self, out: np.ndarray) -> None:
        """Documents into `out` [n, d] in place, block by block (block b seeded by (seed, 1, b))."""
        for b, lo in enumerate(range(0, len(out), BLOCK)):
            rng = np.random.default_rng([self.seed, 1, b])
            m = min(BLOCK, len(out) - lo)
            topic = rng.choice(len(self.centres), size=m, p=self.popularity)
            z = rng.standard_normal((m, self.basis.shape[0]), dtype=np.float32) * self.scales[topic]
            x = self.centres[topic] + self.spread * (z @ self.basis)
            x += rng.standard_normal((m, self.d), dtype=np.float32) * (self.noise / np.sqrt(self.d))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[lo : lo + m] = x


def perturbed_queries(docs: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """n documents drawn at random plus isotropic noise of norm ≈ `noise`, normalised: float32 [n, d]."""
    rng = np.random.default_rng([seed, 2])
    q = docs[rng.integers(0, len(docs), size=n)]
    q = q + rng.standard_normal(q.shape, dtype=np.float32) * (noise / np.sqrt(docs.shape[1]))
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


def timed_search(index: ItemIndex, queries: np.ndarray, k: int, repeat: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(scores and ids of the top k, best seconds of `repeat` batched searches of all queries)."""
    best = float("inf")
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        scores, items = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return scores, items, best


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="documents in the pool")
    p.add_argument("--d", type=int, default=384, help="dimensions")
    p.add_argument("--queries", type=int, default=1_000, help="query vectors (perturbed documents)")
    p.add_argument("--topics", type=int, default=None, help="topics (default n / 1000, at least 16)")
    p.add_argument("--rank", type=int, default=64, help="rank of the within-topic subspace")
    p.add_argument("--query-noise", type=float, default=0.3, help="norm of the noise added to a query document")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--M", type=int, default=32, help="HNSW neighbours per node")
    p.add_argument("--ef-construction", type=int, default=80, help="HNSW efConstruction")
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="HNSW efSearch sweep")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default about 4 √n)")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (default d / 8)")
    p.add_argument("--nbits", type=int, default=8, help="bits per PQ code")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="IVF lists searched, a sweep")
    p.add_argument("--skip", nargs="*", default=[], choices=["hnsw", "ivfpq"], help="index kinds not to run")
    p.add_argument("--repeat", type=int, default=3, help="timed searches per setting; the best counts")
    p.add_argument("--threads", type=int, default=0, help="faiss (OpenMP) threads; 0 = faiss's default")
    p.add_argument("--goal-recall", type=float, default=0.95)
    p.add_argument("--goal-speedup", type=float, default=10.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import faiss

    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    phases: dict[str, float] = {}
    rows: list[dict] = []

    t0 = time.perf_counter()
    gen = TextLikePool(args.d, args.topics or max(16, args.n // 1000), args.rank, args.seed)
    pool = np.zeros((args.n + 1, args.d), dtype=np.float32)  # row 0: padding, never indexed
    gen.fill(pool[1:])
    queries = perturbed_queries(pool[1:], args.queries, args.query_noise, args.seed)
    phases["generate"] = time.perf_counter() - t0

    def run(kind: str, sweep_name: str, sweep: list[int], **params) -> None:
        t0 = time.perf_counter()
        index = build_index(pool, kind, **params)
        phases[f"{kind} build"] = index.build_s
        for value in sweep:
            if kind == "hnsw":
                index.params["ef_search"] = value
            elif kind == "ivfpq":
                index.index.nprobe = index.params["nprobe"] = min(value, index.params["nlist"])
            _, found, seconds = timed_search(index, queries, 10, args.repeat)
            qps = len(queries) / seconds
            shown = {p: v for p, v in index.params.items() if p != "seed"}
            rows.append({"index": kind, "params": ", ".join(f"{p}={v}" for p, v in shown.items()),
                         "build_s": index.build_s, "qps": qps, "speedup": qps / rows[0]["qps"] if rows else 1.0,
                         "recall@10": recall_at_k(found, truth) if kind != "exact" else 1.0, sweep_name: value})
        phases[f"{kind} total"] = time.perf_counter() - t0
        phases[f"{kind} peak GiB"] = peak_gib()

    exact = build_index(pool, "exact")
    truth_scores, truth, seconds = timed_search(exact, queries, 10, args.repeat)
    phases["exact build"] = exact.build_s
    rows.append({"index": "exact", "params": "", "build_s": exact.build_s, "qps": len(queries) / seconds,
                 "speedup": 1.0, "recall@10": 1.0})
    del exact
    if "hnsw" not in args.skip:
        run("hnsw", "efSearch", args.ef_search, M=args.M, ef_construction=args.ef_construction,
            ef_search=args.ef_search[0])
    if "ivfpq" not in args.skip:
        ivf = {"nlist": args.nlist, "m": args.pq_m, "nbits": args.nbits, "nprobe": args.nprobe[0], "seed": args.seed}
        run("ivfpq", "nprobe", args.nprobe, **ivf)

    print(f"pool: n={args.n:,} d={args.d} queries={args.queries:,} topics={len(gen.centres)} rank={args.rank} "
          f"seed={args.seed}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    # how crowded the neighbourhoods are (real sentence embeddings: roughly 0.6–0.9 for the nearest ones)
    print(f"mean cosine of a query to its 1st / 10th exact neighbour: {truth_scores[:, 0].mean():.3f} / "
          f"{truth_scores[:, 9].mean():.3f}\n")
    print("| index | params | build s | qps | × exact qps | recall@10 |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['index']} | {r['params']} | {r['build_s']:.1f} | {r['qps']:,.0f} | {r['speedup']:.1f} "
              f"| {r['recall@10']:.3f} |")
    print("\nphases: " + ", ".join(f"{k} {v:.1f}" + ("" if "GiB" in k else " s") for k, v in phases.items()))
    print(f"peak memory (ru_maxrss): {peak_gib():.2f} GiB (the pool alone: {pool.nbytes / 2**30:.2f} GiB)")
    met = [r for r in rows if r["index"] == "hnsw" and r["recall@10"] >= args.goal_recall
           and r["speedup"] >= args.goal_speedup]
    goal = f"HNSW recall@10 ≥ {args.goal_recall} at ≥ {args.goal_speedup:g}× exact's qps"
    print(f"goal ({goal}): " + (f"met at efSearch {', '.join(str(r['efSearch']) for r in met)}" if met else "not met"))


if __name__ == "__main__":
    main()
