"""What the audits feed a model: probes made from the target's own data (its frame count and feature
width) on the model's own device, or the training set's first videos through its collate function.

Video ``i`` of a probe batch is the same whatever the batch size (each drawn from its own seed), so
a video alone and in a batch, or the video the text view is conditioned on and the first video of a
forward, are one video.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import nn

from videocoop.data import VideoSample, collate_samples

from . import contract
from .core import AuditTarget

#: Items read to learn the data's frame count.
FRAME_ITEMS = 16


def home(model: nn.Module) -> torch.device:
    """Where the model is: the device of its first parameter (or buffer); the CPU when it holds none."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _item_features(item):
    features = item[0] if isinstance(item, (tuple, list)) and item else None
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    return features if isinstance(features, torch.Tensor) and features.dim() == 2 else None


def _data_shapes(target: AuditTarget) -> list[tuple[int, int]]:
    """``(frames, width)`` of the first items of the training set (then the validation set)."""
    shapes = []
    for _, ds in target.datasets():
        for i in range(min(len(ds), FRAME_ITEMS)):
            try:
                features = _item_features(ds[i])
            except Exception:  # noqa: BLE001: dataset-unpacking reports a dataset that raises
                return shapes
            if features is not None:
                shapes.append(tuple(features.shape))
        if shapes:
            return shapes
    return shapes


def feature_dim(target: AuditTarget) -> int:
    """The frame-feature width the model takes: its data's, ``model.embed_dim``, CLIP's embedding width."""
    if "feature_dim" not in target.cache:
        target.cache["feature_dim"] = _feature_dim(target)
    return target.cache["feature_dim"]


def _feature_dim(target: AuditTarget) -> int:
    shapes = _data_shapes(target)
    if shapes:
        return Counter(w for _, w in shapes).most_common(1)[0][0]
    dim = getattr(target.model, "embed_dim", None)
    if isinstance(dim, int):
        return dim
    visual = getattr(target.clip_model, "visual", None)
    if isinstance(getattr(visual, "output_dim", None), int):
        return visual.output_dim
    from .text import plain_text_features

    return int(plain_text_features(target).shape[-1])


def frames(target: AuditTarget) -> int:
    """The frame count of the probes: declared (``AuditTarget.frames``), the data's, or the first count
    the forward takes among :data:`~checks.contract.FRAME_CANDIDATES` (a model fixed to one count)."""
    if "frames" not in target.cache:
        target.cache["frames"], target.cache["frames_how"] = _frames(target)
    return target.cache["frames"]


def _frames(target: AuditTarget) -> tuple[int, str]:
    if target.frames:
        return int(target.frames), f"{target.frames} frames, as declared (AuditTarget.frames)"
    shapes = _data_shapes(target)
    if shapes:
        t = Counter(f for f, _ in shapes).most_common(1)[0][0]
        return t, f"{t} frames, as the data's videos have"
    from .models import run_model

    for t in contract.FRAME_CANDIDATES:
        try:
            run_model(target, probe_videos(target, 1, t))
        except Exception:  # noqa: BLE001: another count may be the model's; none working is the model's failure
            continue
        how = "" if t == contract.FRAME_CANDIDATES[0] else f" (it refused {contract.FRAME_CANDIDATES[0]})"
        return t, f"{t} frames: the first count the forward takes{how}; declare AuditTarget(frames=...) to fix it"
    t = contract.FRAME_CANDIDATES[0]
    return t, f"{t} frames (the forward took none of {list(contract.FRAME_CANDIDATES)})"


def probe_videos(target: AuditTarget, n: int, frames_: int | None = None, device=None) -> torch.Tensor:
    """``n`` random videos ``[n, T, D]`` (video ``i`` drawn from seed ``i``), on the model's device."""
    T = frames(target) if frames_ is None else frames_
    dim = feature_dim(target)
    device = home(target.model) if device is None else torch.device(device)
    if device.type == "meta":
        return torch.empty(n, T, dim, device="meta")
    videos = [torch.randn(T, dim, generator=torch.Generator().manual_seed(i)) for i in range(n)]
    return torch.stack(videos).to(device)  # [n, T, D]


def probe_batch(target: AuditTarget, n: int, frames_: int | None = None, device=None):
    """``(features [n, T, D], labels [n], mask None)`` on the model's device; labels cycle over the classes."""
    x = probe_videos(target, n, frames_, device)
    y = (torch.arange(n) % len(target.classnames)).to(x.device)
    return x, y, None


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


def batch_mask(meta) -> torch.Tensor | None:
    """The padding mask a batch's ``meta`` carries (``meta["mask"]``), if it is a mapping that has one."""
    get = getattr(meta, "get", None)
    mask = get("mask") if callable(get) else None
    return mask if isinstance(mask, torch.Tensor) else None


def training_batch(target: AuditTarget, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    """``(features, labels, mask or None, how)`` on the model's device: the first ``batch`` items of the
    training set through its collate function when they make a valid batch, else probe videos."""
    from torch.utils.data import DataLoader, Subset

    n_cls = len(target.classnames)
    device = home(target.model)
    if target.dataset is not None and len(target.dataset):
        fn, how = collate_for(target, target.dataset)
        try:
            loader = DataLoader(Subset(target.dataset, list(range(min(batch, len(target.dataset))))), batch_size=batch,
                                collate_fn=fn)
            features, labels, meta = next(iter(loader))
            mask = batch_mask(meta)
            if (isinstance(features, torch.Tensor) and features.dim() == 3 and isinstance(labels, torch.Tensor)
                    and not labels.dtype.is_floating_point and bool(((labels >= 0) & (labels < n_cls)).all())):
                mask = None if mask is None else mask.to(device)
                return (features.to(device), labels.to(device), mask,
                        f"the first {len(labels)} training videos ({how})")
        except Exception:  # noqa: BLE001: dataset-unpacking reports what is wrong with the data
            pass
        x, y, _ = probe_batch(target, batch)
        return x, y, None, "probe videos: the training set gives no valid batch (see dataset-unpacking)"
    x, y, _ = probe_batch(target, batch)
    return x, y, None, f"probe videos [{batch}, {x.shape[1]}, {x.shape[2]}] (the target has no dataset)"
