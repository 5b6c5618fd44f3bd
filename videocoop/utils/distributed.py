"""One process among several under torchrun, and the one device picker.

``torchrun --nproc-per-node G -m videocoop <command> ...`` starts G copies of a command;
torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address, and
ends every process when one fails. Nothing here manages processes: :class:`World` says
where this process stands and carries the few collectives a command needs; training
(:mod:`videocoop.train.ddp`) and extraction (:mod:`videocoop.video.extract`) build on it,
each joining the process group with :func:`init_process_group` and picking its GPU with
:func:`device_for`.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import VideoCoopError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run's files and prints its lines."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """Sum (or ``op``) ``tensor`` over the processes, in place; a no-op in one process."""
        if self.distributed:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def gather_object(self, obj) -> list:
        """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items (the first ``n % size`` get one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init_process_group(world: World, device: torch.device | None = None, *, backend: str | None = None,
                       timeout: datetime.timedelta | None = None) -> bool:
    """Join the process group torchrun set up; True when this call started it (and should
    end it with :func:`destroy_process_group`), False in one process or when it was up already.

    Args:
        world: this process's place (:func:`world_from_env`).
        device: this process's device; picks the backend when ``backend`` is None: nccl on
            CUDA (this process's GPU made the current one), gloo elsewhere.
        backend: ``gloo`` carries a few small messages whatever the device (extraction).
        timeout: how long a collective waits for the slowest process (torch's default: None).
    """
    if not world.distributed or dist.is_initialized():
        return False
    if backend is None:
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=timeout)
    log.debug(f"rank {world.rank}/{world.size}: process group up ({backend})")
    return True


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """Each process on its own GPU (``LOCAL_RANK``) when the run asks for CUDA without an index."""
    if world.distributed and device.type == "cuda":
        if device.index not in (None, world.local_rank):
            raise VideoCoopError(f"--device {device} under torchrun: each process takes cuda:LOCAL_RANK; pass --device cuda")
        return torch.device("cuda", world.local_rank)
    return device


#: What ``--device`` takes.
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU.

    Raises:
        VideoCoopError: an unknown device, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise VideoCoopError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}") from e
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if torch.backends.mps.is_available() else [])
    if device.type not in available:
        raise VideoCoopError(f"device {name!r} asked for, but it is not available here; available: {', '.join(available)} (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise VideoCoopError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


__all__ = ["DEVICES", "World", "destroy_process_group", "device_for", "init_process_group", "resolve_device",
           "world_from_env"]
