"""Data-parallel training through `torch.distributed`, as launched by `torchrun` (one process per rank).

`torchrun --nproc_per_node N -m circuits.train …` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`setup` joins the process group from them (gloo on CPU, NCCL on CUDA; several machines through torchrun's own
rendezvous options, `--nnodes`, `--rdzv-endpoint`, …). Without them it is one process and nothing is initialised.

How a step is split (see `circuits.training.loop`): every rank draws the same global batch (same seed), takes
its share of the sequences, and scales its loss so that DistributedDataParallel's averaged gradient equals the
gradient of one process on the whole global batch; sampled negatives are drawn on rank 0 and broadcast, so
every rank scores the same ones. Rank 0 alone validates and writes the run directory; the others receive the
validation result, so every rank takes the same decisions (best epoch, learning-rate decay, stopping).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from circuits.errors import UserError

# validation and the final evaluation run on rank 0 while the others wait at a collective: give them time
TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 without torchrun) and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (any picklable object)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's tensor (same shape and dtype everywhere) on every rank, in place."""
        if self.distributed:
            dist.broadcast(t, src=0)
        return t

    def sum(self, value: float) -> float:
        """The sum of `value` over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return float(t.item())

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. building a data cache), the others after it is done."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def setup(device: str = "cpu") -> Ranks:
    """Join the process group torchrun describes in the environment (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is available to this torch build (it runs on cpu)")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
    return Ranks(rank, world, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
