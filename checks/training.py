"""A short seeded training on one batch, shared by the audits that judge training: learning-signal (does the
loss fall?) and determinism (does the same seed give the same tensors?); and the run's schedule, sampled.

The training takes the run's own optimiser (``make_optimizer``; AdamW with its defaults, said so) and its
own schedule (``make_scheduler``), on a copy of the model, one training batch read inside the seeded block,
``train_step`` per step (default: the loss, backward, the optimiser's step), the schedule stepped after each
step as the run steps it. It starts where the schedule's learning rate is highest (after a warm-up that
holds it at 1e-5 for an epoch, as CoOp's does): a few steps at a warm-up rate move nothing, by design. The
global RNGs (torch, numpy, Python) are seeded before and restored after, so the caller's state is untouched.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import contract
from .core import AuditTarget
from .inputs import home, training_batch
from .models import copy_model

#: Steps of the shared training; its loss is measured before each.
STEPS = 3
#: The seed of both trainings.
SEED = 0
#: Scheduler steps sampled to find the schedule's highest learning rate (the search stops at the first fall
#: after a rise): a CoOp warm-up of one epoch is ceil(videos / batch) steps.
SCHEDULE_STEPS = 2000
#: Videos in the training batch.
BATCH = 4


@dataclass
class Schedule:
    """The run's learning rate, sampled: the first group's rate at each scheduler step until it falls."""

    lrs: list[float]
    base: float  # the first group's rate as the optimiser was made (before the schedule)
    peak_step: int  # the step of the highest rate
    declared: bool  # whether the target declares a schedule

    @property
    def peak(self) -> float:
        return self.lrs[self.peak_step]

    def describe(self) -> str:
        if not self.declared:
            return f"no schedule declared (AuditTarget.make_scheduler): the optimiser's lr {self.base:g} held"
        where = "from its first step" if self.peak_step == 0 else f"at its step {self.peak_step}"
        return (f"the run's schedule: lr {self.lrs[0]:g} at step 0, highest {self.peak:g} {where} "
                f"({len(self.lrs)} step(s) sampled)")


@dataclass
class Training:
    """What a short training did: the loss before each step, the trainable tensors after each step."""

    losses: list[float]
    snapshots: list[dict[str, torch.Tensor]]  # the trainable tensors after each step (CPU copies)
    initial: dict[str, torch.Tensor]  # ... before the first
    no_grad: list[str]  # trainable tensors with no (or an all-zero) gradient after the first step
    batch: str  # how the batch was made
    batch_digest: str  # sha1 of the batch as read (features and labels)
    optimizer: str
    schedule: Schedule
    lrs: list[float] = field(default_factory=list)  # the first group's lr at each step

    def moved(self, step: int | None = None) -> list[str]:
        """Trainable tensors that changed from the start to after ``step`` (the last when None)."""
        after = self.snapshots[-1 if step is None else step]
        return [n for n, t in after.items() if not torch.equal(t, self.initial[n])]


@contextlib.contextmanager
def seeded(seed: int = SEED, device: torch.device | None = None):
    """torch (and the model's CUDA device), numpy and Python seeded inside the block, restored after."""
    cuda = [device] if device is not None and device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _optimizer(target: AuditTarget, model) -> tuple[torch.optim.Optimizer, str]:
    if target.make_optimizer is not None:
        opt = target.make_optimizer(model)
        return opt, f"the run's optimiser {type(opt).__name__}"
    opt = torch.optim.AdamW(list(_trainable(model).values()))
    return opt, "AdamW with its defaults (the target names no optimiser: AuditTarget.make_optimizer)"


def _advance(sched, steps: int) -> None:
    """Step a schedule without training ("lr_scheduler.step() before optimizer.step()": on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            sched.step()


def schedule(target: AuditTarget) -> Schedule:
    """The run's schedule sampled on a throwaway optimiser over a copy (cached)."""
    if "schedule" not in target.cache:
        model = copy_model(target.model)
        opt, _ = _optimizer(target, model)
        base = float(opt.param_groups[0]["lr"])
        sched = contract.scheduler(target, opt)
        lrs = [float(opt.param_groups[0]["lr"])]
        while sched is not None and len(lrs) < SCHEDULE_STEPS and not (max(lrs) > 0 and lrs[-1] < max(lrs)):
            _advance(sched, 1)
            lrs.append(float(opt.param_groups[0]["lr"]))
        peak = max(range(len(lrs)), key=lambda i: (lrs[i], -i))
        target.cache["schedule"] = Schedule(lrs, base, peak, sched is not None)
    return target.cache["schedule"]


def _digest(*tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def short_training(target: AuditTarget, steps: int = STEPS, fresh: bool = False) -> Training:
    """``steps`` seeded training steps on one batch from the schedule's highest learning rate (cached per
    ``steps``; ``fresh``: run again, not cached, for a second seeded run to compare with the first)."""
    key = f"training:{steps}"
    if not fresh and key in target.cache:
        return target.cache[key]
    sched_info = schedule(target)
    model = copy_model(target.model).train()
    if isinstance(getattr(model, "text_encoder", None), torch.nn.Module):
        model.text_encoder.eval()  # frozen CLIP runs without dropout, as train_one_epoch runs it
    with seeded(SEED, home(model)):
        opt, how = _optimizer(target, model)
        sched = contract.scheduler(target, opt)
        if sched is not None:
            _advance(sched, sched_info.peak_step)
        x, y, mask, data = training_batch(target, BATCH)
        digest = _digest(x, y, mask)
        trainable = _trainable(model)
        initial = {n: p.detach().cpu().clone() for n, p in trainable.items()}
        losses, snapshots, lrs, no_grad = [], [], [], []
        for step in range(steps):
            lrs.append(float(opt.param_groups[0]["lr"]))
            loss = contract.train_step(target, model, x, y, mask, opt)
            losses.append(float(loss.detach().float()))
            if step == 0:
                no_grad = [n for n, p in trainable.items() if p.grad is None or not bool(p.grad.detach().ne(0).any())]
            if sched is not None:
                sched.step()
            snapshots.append({n: p.detach().cpu().clone() for n, p in trainable.items()})
    result = Training(losses, snapshots, initial, no_grad, data, digest, how, sched_info, lrs)
    if not fresh:
        target.cache[key] = result
    return result
