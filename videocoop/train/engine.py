"""The loops: one training epoch and one evaluation, with mixed precision.

They know nothing about prompts beyond calling the model: ``model(features, mask)`` per
training step (the class text features once: the context changes every step), and in
evaluation ``encode_text()`` once, then ``logits(encode_video(features), text)`` per batch. The names and argument order are the
seed's (``train_one_epoch(model, loader, optimizer, device, scheduler=None)``,
``validate(model, loader, device, classnames)``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..model.video_clip import VideoFeatureCLIP
from ..utils.distributed import World
from ..utils.errors import VideoCoopError


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; lower the learning rate or use fp32.

    Attributes:
        step: the first step (1-based, within the epoch) whose loss was not finite.
        loss: that loss (nan, inf or -inf).
    """

    def __init__(self, message: str, step: int | None = None, loss: float | None = None):
        super().__init__(message)
        self.step, self.loss = step, loss


class TrainResult(NamedTuple):
    loss: float  # mean cross-entropy over the epoch's videos
    top1: float  # training accuracy, percent


class EvalResult(NamedTuple):
    loss: float  # mean cross-entropy
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    per_class: dict[str, float]  # class name -> top-1 percent (classes without videos left out)
    confusion: torch.Tensor | None = None  # [n_cls, n_cls] counts: row the true class, column the top-1 guess


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 wherever it runs (the CPU, CUDA from Ampere on): fp32's range, so no loss
    scaling; fp16 with a GradScaler only on older GPUs."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, precision: str):
    """Autocast for ``amp`` (the context and its gradients stay fp32)."""
    if precision != "amp":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=amp_dtype(device))


def to_device(batch, device: torch.device):
    features, labels, meta = batch
    mask = meta.get("mask") if isinstance(meta, Mapping) else None
    non_blocking = device.type == "cuda"
    features = features.to(device, non_blocking=non_blocking)  # [B, T, D]
    labels = labels.to(device, non_blocking=non_blocking)  # [B]
    if mask is not None:
        mask = mask.to(device, non_blocking=non_blocking)  # [B, T]
    return features, labels, mask


def train_one_epoch(
    model: VideoFeatureCLIP,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    scheduler=None,
    *,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    on_batch: Callable[[int, int, float, float, float, int], None] | None = None,
    check_every: int = 10,
    world: World = World(),
) -> TrainResult:
    """One pass over ``loader``: per batch, ``model(features, mask)`` (the class text features
    once, then the videos'), the loss, a step.

    Args:
        model: a :class:`~videocoop.model.VideoFeatureCLIP`, or anything whose
            ``model(features [B, T, D], mask)`` returns logits ``[B, n_cls]`` (under
            torchrun: the DDP-wrapped :class:`~videocoop.train.ddp.TrainStep`).
        loader: yields ``(features [B, T, D], labels [B], meta)``; ``meta["mask"]`` when
            padded; None for a process whose share of a small last global batch is empty.
        optimizer: over the trainable parameters.
        device: where the model is.
        scheduler: stepped after every batch.
        precision: ``amp`` autocasts the step; the others need nothing here.
        scaler: a GradScaler for fp16 autocast on CUDA.
        on_batch: called as ``on_batch(step, steps, loss, top1, lr, items)`` for progress.
        check_every: read the on-device "loss not finite" flag every this many steps, and at
            the end of the epoch; the same steps on every process, with or without ``on_batch``.
        world: the processes sharing each global batch: each scales its summed loss by
            ``world.size / global batch``, so DDP's average is the global mean's gradient.

    Returns:
        The epoch's mean loss and top-1 over every process's videos.

    Raises:
        TrainingDiverged: a loss became NaN or inf; ``.step`` says which step first did.
    """
    device = torch.device(device)
    model.train()
    if hasattr(model, "text_encoder"):
        model.text_encoder.eval()  # frozen CLIP: no dropout, whatever the mode of the rest
    steps = len(loader)
    tally = _Tally(steps, device, world)
    for step, batch in enumerate(loader):
        features, labels, mask = to_device(batch, device) if batch is not None else _empty_batch(model, device)
        with autocast(device, precision):
            logits = model(features) if mask is None else model(features, mask)  # [B, n_cls]
            summed = F.cross_entropy(logits.float(), labels, reduction="sum")
        n = torch.ones_like(labels).sum()  # on the device: no host copy per step
        n_global = world.all_reduce(n.clone())  # the global batch: shares may be uneven
        loss = summed * world.size / n_global  # the global mean's share; DDP averages over the world
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses, before the scheduler moves it
        _step(loss, optimizer, scheduler, scaler)
        hit = logits.argmax(-1) == labels  # [B]
        tally.add(step, summed.detach(), hit, n)
        if on_batch is not None:
            # a host sync per batch (one read of both numbers), only when someone is watching
            batch_loss, batch_top1 = torch.stack([summed.detach() / n, hit.float().mean()]).tolist()
            on_batch(step + 1, steps, batch_loss, 100.0 * batch_top1, lr, labels.shape[0])
        if (step + 1) % check_every == 0:
            # a host sync, and under torchrun two all-reduces: at the same steps on every process,
            # whoever shows bars (a collective one process skips waits for ever in the others)
            tally.raise_if_diverged()
    tally.raise_if_diverged()  # the steps since the last read
    return tally.result()


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler | None) -> None:
    """Backward, the optimiser's step (through the scaler for fp16), the schedule's step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


class _Tally:
    """An epoch's sums, kept on the device so a step costs no host sync: the loss, the hits,
    the videos, and the first step whose loss was not finite (``steps`` while none), read
    only by :meth:`raise_if_diverged` (so a NaN stops the run within a few steps, and every
    process stops at the same step)."""

    def __init__(self, steps: int, device: torch.device, world: World):
        self.steps, self.world = steps, world
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = torch.zeros((), device=device, dtype=torch.long)
        self.bad_step = torch.full((), steps, device=device, dtype=torch.long)
        self.bad_loss = torch.zeros((), device=device)

    def add(self, step: int, summed: torch.Tensor, hit: torch.Tensor, n: torch.Tensor) -> None:
        first_bad = (self.bad_step == self.steps) & ~torch.isfinite(summed)
        self.bad_step.masked_fill_(first_bad, step)
        self.bad_loss = torch.where(first_bad, summed / n.clamp_min(1), self.bad_loss)
        self.loss_sum += summed
        self.correct += hit.sum()
        self.seen += n

    def raise_if_diverged(self) -> None:
        bad_step, bad_loss = self.bad_step, self.bad_loss
        if self.world.distributed:
            bad_step = self.world.all_reduce(bad_step.clone(), dist.ReduceOp.MIN)  # the first over the processes
            bad_loss = self.world.all_reduce(bad_loss.clone())  # 0 where finite: the sum is the bad value
        step = int(bad_step)  # the host sync
        if step < self.steps:
            value = float(bad_loss)
            raise TrainingDiverged(f"training loss became {value} at step {step + 1} of {self.steps}", step + 1, value)

    def result(self) -> TrainResult:
        """The mean loss and top-1 over every process's videos."""
        totals = self.world.all_reduce(torch.stack([self.loss_sum.double(), self.correct.double(), self.seen.double()]))
        loss_total, correct_total, seen_total = totals.tolist()
        return TrainResult(loss_total / max(seen_total, 1), 100.0 * correct_total / max(seen_total, 1))


def _empty_batch(model, device: torch.device):
    """No videos for this process in this step: it still joins the step's collectives."""
    inner = getattr(getattr(model, "module", model), "model", model)
    return torch.zeros(0, 1, inner.embed_dim, device=device), torch.zeros(0, dtype=torch.long, device=device), None


@torch.no_grad()
def class_text(model: VideoFeatureCLIP, device: torch.device | str, precision: str = "fp32") -> torch.Tensor:
    """The class text features ``[n_cls, E]`` evaluation scores against: ``encode_text()`` in
    eval mode, without gradients, autocast as :func:`validate` runs it."""
    model.eval()
    with autocast(torch.device(device), precision):
        return model.encode_text()  # [n_cls, E]


@torch.no_grad()
def validate(
    model: VideoFeatureCLIP,
    loader,
    device: torch.device | str,
    classnames: list[str],
    *,
    precision: str = "fp32",
    world: World = World(),
    text: torch.Tensor | None = None,
) -> EvalResult:
    """Loss, top-1, top-5, per-class top-1 (percent) and the confusion matrix over ``loader``.

    The class text features do not depend on the videos: computed once per call, or passed
    as ``text`` (:func:`class_text` of the same model) by a caller that evaluates several
    splits of one model. Under torchrun each process evaluates its share of the videos and
    the counts are summed over the processes: top-1, top-5, per-class and the matrix equal
    one process's exactly (the loss to float rounding).
    """
    device = torch.device(device)
    if text is None:
        text = class_text(model, device, precision)  # [n_cls, E], once per evaluation
    model.eval()
    n_cls = len(classnames)
    k = min(5, n_cls)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    confusion = torch.zeros(n_cls * n_cls, device=device, dtype=torch.long)  # flat [true * n_cls + guess]
    for batch in loader:
        features, labels, mask = to_device(batch, device)
        with autocast(device, precision):
            logits = model.logits(model.encode_video(features, mask), text).float()  # [B, n_cls]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        topk = logits.topk(k, dim=-1).indices  # [B, k]
        top5 += (topk == labels[:, None]).any(-1).sum()
        confusion.index_add_(0, labels * n_cls + topk[:, 0], torch.ones_like(labels))
    world.all_reduce(loss_sum)
    world.all_reduce(top5)
    world.all_reduce(confusion)
    confusion = confusion.view(n_cls, n_cls)
    counts, hits = confusion.sum(1), confusion.diagonal()  # [n_cls] each
    total = int(counts.sum())
    if total == 0:
        raise VideoCoopError("nothing to evaluate: the validation loader is empty")
    per_class = {c: 100.0 * int(h) / int(n) for c, h, n in zip(classnames, hits.tolist(), counts.tolist()) if n}
    return EvalResult(float(loss_sum) / total, 100.0 * int(hits.sum()) / total, 100.0 * top5.item() / total, per_class,
                      confusion.cpu())


__all__ = ["EvalResult", "TrainResult", "TrainingDiverged", "amp_dtype", "autocast", "class_text", "to_device",
           "train_one_epoch", "validate"]
