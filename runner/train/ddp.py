"""Data-parallel plumbing for the torch trainer: one process per device, started by torchrun.

`torchrun --nproc_per_node=N` (or `accelerate launch`) sets WORLD_SIZE/RANK/LOCAL_RANK and the
rendezvous address; with WORLD_SIZE>1 we join the process group (nccl on GPU, gloo on CPU) and
every rank trains on its own slice of each global batch. A single process needs none of this.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(device: str, local_rank: int = 0) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    return device


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group when launched with WORLD_SIZE>1; otherwise a single-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return Dist(device=dev)
    import torch
    import torch.distributed as dist

    if dev.startswith("cuda"):
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=dev)


def shard(global_batch: list[int], d: Dist) -> list[int]:
    """This rank's rows of a global batch (strided, like DistributedSampler, so lengths stay balanced)."""
    return global_batch[d.rank::d.world]


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Sum floats over ranks (identity in a single process)."""
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64,
                     device=d.device if d.device.startswith("cuda") else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(d: Dist) -> None:
    """Leave the process group (torchrun warns about a group that is never destroyed)."""
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
