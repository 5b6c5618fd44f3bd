"""Several processes with torchrun: the process group, the global batches, sharded text.

``torchrun --nproc-per-node G -m videocoop train ...`` starts G copies of the command;
torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address, and
ends every process when one fails. Nothing here manages processes.

Exactness is the design goal: G processes compute what one process computes.

- The order of the videos is a pure function of (seed, epoch) (and so is each video's
  frame sampling: :func:`~videocoop.data.frame_offsets`), and the sequence of global
  batches does not depend on G: :class:`GlobalBatchSampler` cuts each global batch of
  ``batch_size`` videos into G shares. A run resumed under another G continues the same
  sequence.
- Each process scales its summed loss by ``G / global batch size``; DDP averages the
  gradients over the G processes, so the step is the gradient of the global batch's mean
  loss, as in one process, even for a last batch that does not split evenly.
- With ``shard_text`` each process encodes only its share of the classes through the text
  tower and the class features are all-gathered with gradients (the backward sums each
  share's gradient over the processes): the same logits and context gradients, the text
  cost divided by G.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from .data import mix
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


def init_process_group(world: World, device: torch.device) -> bool:
    """Join the process group torchrun set up (nccl on CUDA, gloo on the CPU); True when this
    call started it (and should end it with :func:`destroy_process_group`)."""
    if not world.distributed or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size)
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


# --------------------------------------------------------------------------- sampling


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of ``n`` training videos in ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix(seed, epoch)))


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for this process: each epoch's permutation cut into global
    batches of ``batch_size`` (the last may be smaller), each global batch cut into
    ``world.size`` shares (``batch[rank::size]``).

    The global batches are the same for any number of processes; call :meth:`set_epoch`
    before each epoch, as with ``DistributedSampler``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, world: World = World()):
        self.n, self.batch_size, self.seed, self.world = n, batch_size, seed, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.n, self.seed, self.epoch).tolist()
        for start in range(0, self.n, self.batch_size):
            yield order[start:start + self.batch_size][self.world.rank::self.world.size]


class ShardSampler(Sampler[int]):
    """Evaluation's share of this process: indices ``rank, rank + size, …`` (no padding, no
    repeats: every video counted once over the processes)."""

    def __init__(self, n: int, world: World = World()):
        self.n, self.world = n, world

    def __len__(self) -> int:
        return len(range(self.world.rank, self.n, self.world.size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.world.rank, self.n, self.world.size))


# --------------------------------------------------------------------------- the step


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends each process the gradient of its own rows, summed
    over every process's loss. PyTorch has had one (``torch.distributed.nn.functional.
    all_gather``), deprecated in 2.14 for a private module; this one is four lines and
    uses only public collectives (an all-reduce in backward: a few hundred KiB a step)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)  # [size * rows, E]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_shards(local: torch.Tensor, n: int, world: World) -> torch.Tensor:
    """Every process's rows ``[share, E]`` gathered into ``[n, E]`` in rank order, with
    gradients flowing back to each share's owner (summed over the processes)."""
    width = -(-n // world.size)  # an all-gather needs equal shapes: pad each share to the largest
    padded = F.pad(local, (0, 0, 0, width - local.shape[0]))
    parts = _GatherWithGrad.apply(padded).split(width)
    sizes = [len(range(n)[World(r, world.size).shard(n)]) for r in range(world.size)]
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])  # [n, E]


class TrainStep(nn.Module):
    """What DistributedDataParallel wraps: frame features in, logits out, the class text
    features computed once per step, over this process's share of the classes when
    ``shard_text`` (then gathered)."""

    def __init__(self, model: nn.Module, world: World, shard_text: bool):
        super().__init__()
        self.model, self.world, self.shard_text = model, world, shard_text

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n = len(self.model.classnames)
        if self.shard_text:
            text = gather_shards(self.model.encode_text(self.world.shard(n)), n, self.world)  # [n_cls, E]
        else:
            text = self.model.encode_text()  # [n_cls, E]
        return self.model.logits(self.model.encode_video(features, mask), text)  # [B, n_cls]

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.text_encoder.eval()  # frozen CLIP: no dropout, whatever the mode of the rest
        return self


__all__ = [
    "GlobalBatchSampler", "ShardSampler", "TrainStep", "World", "destroy_process_group", "device_for",
    "epoch_permutation", "gather_shards", "init_process_group", "world_from_env",
]
