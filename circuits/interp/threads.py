"""One intra-op thread for small work: the d_model × d_head factors of one head, one query per layer.

Threads cannot speed up an operation on a few thousand numbers, and every parallel operation ends at a barrier
that waits for the slowest thread: on a machine whose cores are busy (a training run beside the analysis) that
thread first waits for a core. On 2 cores beside training processes, the 50 random pairs of the composition
baseline (SVDs of 64 × 32 factors) took 30 s in two threads and 0.3 s in one; the translation experiment's
replays of the last query, 31 ms a call in two threads. Used for such work only: a batch of whole histories keeps
every thread. Small work in one thread gives the same numbers as in two here (the composition scores are
identical), though in general a reduction split between threads may add in another order.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """Within the block, torch runs its CPU operations in one thread (the previous number restored after)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
