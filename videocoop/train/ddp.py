"""DDP for the trainer: global batches cut into shares, sharded text with gradients, the step DDP wraps.

``torchrun --nproc-per-node G -m videocoop train ...`` starts G copies of the command;
torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address, and
ends every process when one fails. Nothing here manages processes.

Exactness is the design goal: G processes compute what one process computes.

- The order of the videos is a pure function of (seed, epoch) (and so is each video's
  frame sampling: :func:`~videocoop.data.sampling.frame_offsets`), and the sequence of global
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

import inspect
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from ..utils.distributed import World
from ..utils.seeding import seed_hash


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of ``n`` training videos in ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed_hash(seed, epoch)))



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


def wrap(step: TrainStep, device: torch.device) -> DistributedDataParallel:
    """``step`` under DistributedDataParallel (gradients of the trainable parameters averaged
    over the processes), without DDP's buffer broadcast before every forward: the buffers
    (prompt tokens, CLIP's mask) are constants, the same in every process.

    Recent torch releases name that switch ``forward_sync_buffers`` and deprecate
    ``broadcast_buffers``; older ones (back to the 2.5 floor in pyproject.toml) have only
    ``broadcast_buffers``, which, False, also skips the buffers' sync at construction:
    harmless for constants.
    """
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
