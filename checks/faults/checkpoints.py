"""Checkpoint faults (checkpoint-strictness): files saved from a wrapper, of another shape or not there, and
CoOp's own ``strict=False`` loader meeting keys it does not expect."""
from __future__ import annotations

import torch

from ..core import AuditTarget
from .data import with_data


def _state(target: AuditTarget) -> dict:
    return {k: v.detach().clone() for k, v in target.model.trainable_state_dict().items()}


def checkpoint_from_ddp(clip, tok, names) -> AuditTarget:
    """Resuming from a checkpoint saved from the DDP-wrapped model: every key carries 'module.'."""
    target = with_data(clip, tok, names)
    target.checkpoint = {"trainable": {f"module.{k}": v for k, v in _state(target).items()},
                         "classnames": list(names), "epoch": 3}
    return target


def checkpoint_missing_file(clip, tok, names) -> AuditTarget:
    """--eval-only pointed at a run folder whose checkpoint is not there (a typo, a run that never saved)."""
    target = with_data(clip, tok, names)
    target.checkpoint = "output/no-such-run/checkpoint_last.pt"
    return target


def checkpoint_other_shape(clip, tok, names) -> AuditTarget:
    """A checkpoint of a run with 8 context vectors, for a model with 4."""
    target = with_data(clip, tok, names)
    ctx = torch.zeros(8, target.model.prompt_learner.ctx.shape[-1])
    target.checkpoint = {"trainable": {"prompt_learner.ctx": ctx}, "classnames": list(names), "epoch": 3}
    return target


def coop_strict_false_loader(clip, tok, names) -> AuditTarget:
    """CoOp's loader (``load_state_dict(state, strict=False)``) on a state saved from the DDP wrapper: every key
    is unexpected, none loads, and nothing says so."""
    target = with_data(clip, tok, names)
    target.save_state = lambda m: {f"module.{k}": v.detach().clone() for k, v in m.trainable_state_dict().items()}
    target.load_state = lambda m, state: m.load_state_dict(state, strict=False)
    return target


__all__ = ["checkpoint_from_ddp", "checkpoint_missing_file", "checkpoint_other_shape", "coop_strict_false_loader"]
