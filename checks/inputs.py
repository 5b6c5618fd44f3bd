"""What the audits feed a model: frame features of the width it expects, random (seeded) or
the training set's own first videos through its collate function, and whether it takes a mask."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from videocoop.data import VideoSample, collate_samples

from .core import AuditTarget
from .text import plain_text_features


def feature_dim(target: AuditTarget) -> int:
    """The frame-feature width the model expects."""
    dim = getattr(target.model, "embed_dim", None)
    if isinstance(dim, int):
        return dim
    return int(plain_text_features(target).shape[-1])


def sample_batch(target: AuditTarget, batch: int = 4, frames: int = 8, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random frame features ``[B, T, D]`` and labels ``[B]`` (seeded), on ``device``."""
    n_cls = len(target.classnames)
    shape = (batch, frames, feature_dim(target))
    if torch.device(device).type == "meta":
        return torch.empty(shape, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    y = torch.arange(batch) % n_cls
    return x.to(device), y.to(device)


def collate_for(target: AuditTarget, dataset) -> tuple[object, str]:
    """The collate function a DataLoader over ``dataset`` trains with, and a line saying which:
    the target's ``collate_fn``; for our datasets (items are ``VideoSample``) our
    ``collate_samples``, which pads videos of different lengths and masks them; else None
    (the DataLoader's default collate, which stacks equal shapes only)."""
    if target.collate_fn is not None:
        return target.collate_fn, f"the target's collate_fn ({getattr(target.collate_fn, '__qualname__', target.collate_fn)})"
    if len(dataset) and isinstance(dataset[0], VideoSample):
        return collate_samples, ("videocoop.data.collate_samples: the dataset yields VideoSample and the target "
                                 "names no collate_fn")
    return None, "the DataLoader's default collate (the target names no collate_fn)"


def training_batch(target: AuditTarget, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    """``(features, labels, mask or None, how)``: the first ``batch`` items of the training set
    through its collate function when they make a valid batch, else random features (seeded)."""
    from torch.utils.data import DataLoader, Subset

    n_cls = len(target.classnames)
    if target.dataset is not None and len(target.dataset):
        fn, how = collate_for(target, target.dataset)
        try:
            loader = DataLoader(Subset(target.dataset, list(range(min(batch, len(target.dataset))))), batch_size=batch,
                                collate_fn=fn)
            features, labels, meta = next(iter(loader))
            mask = meta.get("mask") if isinstance(meta, dict) else None
            if (isinstance(features, torch.Tensor) and features.dim() == 3 and isinstance(labels, torch.Tensor)
                    and labels.dtype == torch.long and bool(((labels >= 0) & (labels < n_cls)).all())):
                return features, labels, mask, f"the first {len(labels)} training videos ({how})"
        except Exception:  # noqa: BLE001: dataset-unpacking reports what is wrong with the data
            pass
        x, y = sample_batch(target, batch=batch)
        return x, y, None, "random features: the training set gives no valid batch (see dataset-unpacking)"
    x, y = sample_batch(target, batch=batch)
    return x, y, None, f"random features [{batch}, 8, D] (the target has no dataset)"


def takes_mask(model: nn.Module) -> bool:
    """Whether ``model(features, mask)`` is accepted: a second parameter (or ``*args``) in its forward."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
