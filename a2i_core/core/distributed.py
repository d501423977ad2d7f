"""Spreading a stage's work over the processes of ``torchrun``, one GPU each.

Work is cut into units (shards, image batches) planned identically in every process; process ``rank`` takes
units ``rank, rank + world, ...``. Each unit is computed exactly as a single process would compute it, so the
outputs are identical whatever the number of processes. Without torchrun this is one process of rank 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from a2i_core.core.devices import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, units: Sequence[T]) -> list[tuple[int, T]]:
        """(index, unit) pairs this process handles."""
        return [(i, u) for i, u in enumerate(units) if i % self.size == self.rank]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def device(self, name: str) -> torch.device:
        """The params' device, with one GPU per process under torchrun (init_world bound this process to it)."""
        device = resolve_device(name)
        if device.type == "cuda" and self.size > 1 and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, in rank order (a list of one without torchrun)."""
        if self.size == 1:
            return [value]
        out: list = [None] * self.size
        dist.all_gather_object(out, value)
        return out


SOLO = World(rank=0, size=1, local_rank=0)


def init_world() -> World:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPU), or run alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    world = World(rank=int(os.environ.get("RANK", "0")), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if size > 1 and not dist.is_initialized():
        # Collectives wait at most this long for the slowest process: a rank that drew the last, longest shards
        # must not be killed by the 10-minute default while the others sit at the final barrier.
        timeout = timedelta(hours=2)
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        if torch.cuda.device_count() >= local_size:
            # Bind each process to its own GPU before the first collective, or every barrier runs on GPU 0.
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", timeout=timeout, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    return world


def close_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
