"""Base-to-novel evaluation: the learned context, carried over to classes it never saw.

A model over the novel classes is built beside the training model (same CLIP, same prompt
layout, its own class tokens: :func:`~videocoop.train.builder.build_novel_model`); it is
never handed to the optimiser and never runs in a training step. After training the
learned tensors (the shared context, the temporal module) are copied into it and it is
scored on the novel classes' videos, among the novel classes only, as CoCoOp does.
Class-specific context has no vectors for a class it never saw, so it is refused before
anything is built.
"""
from __future__ import annotations

import torch

from ..data.protocols import harmonic_mean
from ..model.video_clip import VideoFeatureCLIP
from ..utils.distributed import World
from ..utils.errors import VideoCoopError
from .engine import validate


def check_transferable(csc: bool) -> None:
    """Refuse class-specific context for base-to-novel: it has no vectors for an unseen class.

    Raises:
        VideoCoopError: ``csc`` is true.
    """
    if csc:
        raise VideoCoopError("the context is class-specific (--csc, or class_prompts in the prompts file), which "
                             "cannot carry over to novel classes: base-to-novel needs the unified context")


def transfer(model: VideoFeatureCLIP, novel_model: VideoFeatureCLIP) -> None:
    """Copy the learned tensors (context, temporal module) of ``model`` into ``novel_model``."""
    state = model.trainable_state_dict()
    with torch.no_grad():
        params = dict(novel_model.named_parameters())
        for name, value in state.items():
            params[name].copy_(value)


def evaluate_novel(model: VideoFeatureCLIP, novel_model: VideoFeatureCLIP, loader, device, base_top1: float,
                   precision: str = "fp32", world: World = World()) -> dict:
    """Score the novel classes with ``model``'s learned context; with ``base_top1`` (base
    videos among base classes) the base-to-novel numbers of a summary.

    Returns:
        ``base_top1``, ``novel_top1``, ``novel_top5``, ``hm`` (CoCoOp's harmonic mean of
        base and novel top-1), ``novel_per_class`` and the class lists.
    """
    transfer(model, novel_model)
    result = validate(novel_model, loader, device, novel_model.classnames, precision=precision, world=world)
    return {
        "base_top1": base_top1, "novel_top1": result.top1, "novel_top5": result.top5,
        "hm": harmonic_mean(base_top1, result.top1), "base_classes": list(model.classnames),
        "novel_classes": list(novel_model.classnames), "novel_per_class": result.per_class,
    }


__all__ = ["check_transferable", "evaluate_novel", "transfer"]
