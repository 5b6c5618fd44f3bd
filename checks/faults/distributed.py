"""Distributed faults (distributed-equivalence): the step of several processes written the ways users write
it wrong (open_clip #1047, #616, #45; CoOp #14), beside our own trainer's step, on our clean model."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..core import AuditTarget
from ..distributed import videocoop_step
from .data import with_data


def distributed_clean(clip, tok, names) -> AuditTarget:
    """Our model with the step videocoop train takes under torchrun (DDP, sharded text, its loss scaling)."""
    target = with_data(clip, tok, names)
    target.distributed_step = videocoop_step
    return target


class _Step(nn.Module):
    """The model's logits with the class text encoded in the step (what DDP wraps in a hand-written script)."""

    def __init__(self, model, gather_text: bool = False, gather_scale: bool = False):
        super().__init__()
        self.model, self.gather_text, self.gather_scale = model, gather_text, gather_scale

    def forward(self, features, mask=None):
        m = self.model
        n, size, rank = len(m.classnames), dist.get_world_size(), dist.get_rank()
        if self.gather_text:  # each process encodes its share of the classes, then gathers them
            shares = [range(n)[r * n // size:(r + 1) * n // size] for r in range(size)]
            local = m.encode_text(slice(shares[rank].start, shares[rank].stop))  # [share, E]
            width = max(len(s) for s in shares)  # all_gather takes equal shapes: pad each share
            parts = [torch.empty(width, local.shape[1]) for _ in shares]
            dist.all_gather(parts, F.pad(local.detach(), (0, 0, 0, width - len(local))))  # no autograd back
            parts = [p[:len(s)] for p, s in zip(parts, shares)]
            parts[rank] = local  # the usual half-fix: only the own share keeps its gradient
            text = torch.cat(parts)  # [n_cls, E]
        else:
            text = m.encode_text()
        logits = m.logits(m.encode_video(features, mask), text)  # [B, n_cls]
        if self.gather_scale:  # the scale each process holds, gathered as DataParallel gathers a scalar output
            scales = [torch.empty(()) for _ in range(size)]
            dist.all_gather(scales, m.logit_scale.detach().float().exp())
            logits = logits * torch.stack(scales).sum() / m.logit_scale.float().exp()
        return logits


_WRAPPED: dict = {}


def _ddp(model, size, **kwargs):
    key = (id(model), size, tuple(sorted(kwargs.items())))
    if key not in _WRAPPED:
        _WRAPPED[key] = DistributedDataParallel(_Step(model, **kwargs)) if size > 1 else _Step(model, **kwargs)
    return _WRAPPED[key]


def _train(step_model, features, labels, mask, optimizer, loss_scale: float = 1.0):
    step_model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(step_model(features, mask).float(), labels) * loss_scale
    loss.backward()
    optimizer.step()
    return loss.detach()


def world_size_scaled(clip, tok, names) -> AuditTarget:
    """The per-process mean loss multiplied by the world size 'because DDP averages' (open_clip #616)."""
    target = with_data(clip, tok, names)
    target.distributed_step = lambda model, x, y, mask, opt, rank, size: _train(_ddp(model, size), x, y, mask, opt,
                                                                                 loss_scale=size)
    return target


def gather_without_grad(clip, tok, names) -> AuditTarget:
    """The class text sharded over the processes and gathered with dist.all_gather, which carries no gradient back
    (open_clip #1047): only a process's own share trains from its own videos."""
    target = with_data(clip, tok, names)
    target.distributed_step = lambda model, x, y, mask, opt, rank, size: _train(
        _ddp(model, size, gather_text=size > 1), x, y, mask, opt)
    return target


def no_all_reduce(clip, tok, names) -> AuditTarget:
    """Each process steps on its own share's gradient: the model is never wrapped in DDP (CoOp #14's scripts)."""
    target = with_data(clip, tok, names)
    target.distributed_step = lambda model, x, y, mask, opt, rank, size: _train(_Step(model), x, y, mask, opt)
    return target


def scalar_gathered(clip, tok, names) -> AuditTarget:
    """The logit scale gathered into one copy per process and summed where one was meant (open_clip #45)."""
    target = with_data(clip, tok, names)
    target.distributed_step = lambda model, x, y, mask, opt, rank, size: _train(
        _ddp(model, size, gather_scale=True), x, y, mask, opt)
    return target


__all__ = ["distributed_clean", "gather_without_grad", "no_all_reduce", "scalar_gathered", "world_size_scaled"]
