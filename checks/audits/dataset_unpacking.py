"""dataset-unpacking: items and batches are (features, label, meta), as the trainer unpacks them."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from .. import contract
from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import batch_mask, collate_for, feature_dim, home
from ..locations import locate
from ..models import copy_model, run_model, text_features
from ..text import probe_classes

#: Items read per dataset (spread over it); labels are checked on all of them.
MAX_ITEMS = 256
BATCH = 4


def _label(value):
    """The label as an int when it is an integer of any kind (Python, numpy, a 0-d integer tensor), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        integer = not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
        return int(value) if integer else None
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        return int(value)
    return None


def _floating(features) -> bool:
    if isinstance(features, torch.Tensor):
        return features.dtype.is_floating_point
    return isinstance(features, np.ndarray) and features.dtype.kind == "f"


def check_item(item, i: int, n_cls: int, dim: int) -> list[str]:
    """What is wrong with one dataset item (empty when nothing)."""
    if not isinstance(item, (tuple, list)) or len(item) != 3:
        size = len(item) if isinstance(item, (tuple, list)) else type(item).__name__
        return [f"item {i} is a {type(item).__name__} of {size} field(s): `features, label, meta = item` "
                f"raises ValueError (expected (features, label, meta))"]
    features, label, _ = item  # meta may be anything: the trainer passes it along (a mask when it holds one)
    problems = []
    if not _floating(features):
        problems.append(f"item {i}: features are {type(features).__name__} "
                        f"{getattr(features, 'dtype', '')}, expected a float tensor")
    else:
        features = torch.as_tensor(features)
        if features.dim() != 2 or features.shape[-1] != dim:
            problems.append(f"item {i}: features {list(features.shape)}, expected [T, {dim}]")
        if not bool(torch.isfinite(features).all()):
            problems.append(f"item {i}: features contain NaN/inf")
    y = _label(label)
    if y is None:
        problems.append(f"item {i}: label {label!r} is not an integer")
    elif not 0 <= y < n_cls:
        problems.append(f"item {i}: label {y} outside [0, {n_cls})" + (" (labels start at 1?)" if y == n_cls else ""))
    return problems


def check_batch(batch, n_cls: int, dim: int) -> list[str]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 3:
        return [f"a DataLoader batch has {len(batch) if isinstance(batch, (tuple, list)) else type(batch).__name__} "
                f"field(s): `features, labels, meta = batch` raises"]
    features, labels, meta = batch
    problems = []
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[-1] != dim:
        problems.append(f"batch features {list(getattr(features, 'shape', []))}, expected [B, T, {dim}]")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.dim() != 1:
        problems.append(f"batch labels {getattr(labels, 'dtype', type(labels).__name__)}, expected an integer tensor [B]")
    elif labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < n_cls):
        problems.append(f"batch labels in [{int(labels.min())}, {int(labels.max())}], expected [0, {n_cls})")
    return problems


class CachedTextModel(nn.Module):
    """The model with its class text features computed once (a trainable zero shift keeps
    the backward alive): the trainer's loop runs the real video path and logits in seconds."""

    def __init__(self, model: nn.Module, text: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1))  # [n_cls, E]
        self.shift = nn.Parameter(torch.zeros_like(self.text))
        self.seen: list[tuple] = []

    def encode_text(self) -> torch.Tensor:
        return F.normalize(self.text + self.shift, dim=-1)

    def encode_video(self, features, mask=None):
        self.seen.append((list(features.shape), None if mask is None else list(mask.shape)))
        return self.model.encode_video(features, mask)

    def logits(self, video, text):
        return self.model.logits(video, text)

    def forward(self, features, mask=None):  # what a training step calls: the seed's model(features)
        return self.logits(self.encode_video(features, mask), self.encode_text())


def run_trainer(target: AuditTarget, loader) -> list[str]:
    """One batch through the target's train_one_epoch and validate; returns evidence lines."""
    trainer = target.trainer
    probe = CachedTextModel(copy_model(target.model), text_features(target))
    opt = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=1e-3)
    device = home(target.model)  # the trainer moves each batch to the device the model is on
    tr = trainer.train_one_epoch(probe, loader, opt, device)
    ev = trainer.validate(probe, loader, device, list(target.classnames))
    shapes = "; ".join(f"features {f}, mask {m}" for f, m in probe.seen)
    return [f"{trainer.__name__}.train_one_epoch + validate on one batch (class text features computed once, "
            f"the model's own video path and logits): the model received {shapes}",
            f"train_one_epoch -> {tuple(round(v, 4) for v in tr)}; validate -> loss {ev[0]:.4f}, top1 {ev[1]:.1f}"]


@audit(
    "dataset-unpacking",
    title="Dataset items unpack as (features, label, meta)",
    problem="the trainer unpacks `features, labels, _ = batch` while the dataset yields another shape "
            "(two fields, labels from 1, features [D, T]): a crash, or silently wrong labels",
    fix="items and DataLoader batches are (features [T, D] float, label in [0, n_cls), meta dict); one batch "
        "goes through the trainer's train_one_epoch and validate",
    remediation="return VideoSample(features, label, meta) from __getitem__ with 0-based labels in class "
                "order and features [T, D] in the model's embedding dim; videos of different lengths need a "
                "collate function that pads and masks (videocoop.data.collate_samples): pass the one your "
                "DataLoader uses as AuditTarget(collate_fn=...)",
    needs=("data",),
)
def dataset_unpacking(target: AuditTarget) -> Outcome:
    """Read items and one batch of every dataset; push one batch through the trainer."""
    sets = target.datasets()
    n_cls, dim = len(target.classnames), feature_dim(target)
    problems, evidence, metrics = [], [], {}
    for split, ds in sets:
        idx = probe_classes(len(ds), MAX_ITEMS)
        labels, lengths, metas, kinds = [], set(), set(), set()
        for i in idx:
            item = ds[i]
            found = check_item(item, i, n_cls, dim)
            problems += [f"{split}: {p}" for p in found]
            if not found:
                labels.append(_label(item[1]))
                lengths.add(int(item[0].shape[0]))
                metas.add(type(item[2]).__name__)
                kinds.add(type(item[1]).__name__)
            if len(problems) > 20:
                break
        metrics[f"{split}_items_checked"] = len(idx)
        declared = getattr(ds, "labels", None)  # every label, when the dataset lists them (FeatureDataset does)
        if isinstance(declared, (list, tuple)) and declared:
            out = sorted({y for y in declared if not (isinstance(y, int) and 0 <= y < n_cls)}, key=str)
            evidence.append(f"{split}: dataset.labels lists {len(declared)} labels, {len(out)} distinct outside [0, {n_cls})")
            if out:
                problems.append(f"{split}: dataset.labels has labels outside [0, {n_cls}): {out[:5]}"
                                + (" (labels start at 1?)" if n_cls in out else ""))
        if labels:
            evidence.append(f"{split}: {len(idx)} of {len(ds)} items read; labels {min(labels)}..{max(labels)} "
                            f"({len(set(labels))} distinct, {'/'.join(sorted(kinds))}) for {n_cls} classes; meta "
                            f"{'/'.join(sorted(metas))}")
        if problems:
            continue
        collate, how = collate_for(target, ds)
        evidence.append(f"{split}: collate: {how}")
        # the first batch, and one that mixes the shortest and the longest video when lengths differ
        first = list(range(min(BATCH, len(ds))))
        if len(lengths) > 1:
            by_length = {int(ds[i][0].shape[0]): i for i in idx}
            first = sorted({by_length[min(lengths)], by_length[max(lengths)], *first})[:BATCH]
        loader = DataLoader(Subset(ds, first), batch_size=BATCH, collate_fn=collate)
        try:
            batch = next(iter(loader))
        except RuntimeError as e:
            if collate is not None or len(lengths) < 2:
                raise  # the target's own collate raised: the runner names it
            problems.append(f"{split}: items have {min(lengths)} to {max(lengths)} frames: the DataLoader's default "
                            f"collate cannot stack them ({str(e).splitlines()[0][:80]}); give the target the collate "
                            f"function your DataLoader uses, AuditTarget(collate_fn=...) "
                            f"(videocoop.data.collate_samples pads to the longest and masks)")
            continue
        problems += [f"{split}: {p}" for p in check_batch(batch, n_cls, dim)]
        if not problems:
            evidence.append(f"{split}: batch features {list(batch[0].shape)} {batch[0].dtype}, labels "
                            f"{batch[1].tolist()}, meta keys {sorted(batch[2]) if isinstance(batch[2], Mapping) else type(batch[2]).__name__}")
            if split == "train" and target.trainer is not None:
                evidence += run_trainer(target, loader)
            elif split == "train" and (gap := contract.unmet(target, "forward")):
                evidence.append(f"the model was not run on the batch: {gap}")
            elif split == "train":
                mask = batch_mask(batch[2])
                device = home(target.model)
                logits = run_model(target, batch[0].to(device), None if mask is None else mask.to(device))
                evidence.append(f"the model's logits for the batch{' (with its mask)' if mask is not None else ''}: "
                                f"{list(logits.shape)}")
                if list(logits.shape) != [len(batch[1]), n_cls]:
                    problems.append(f"logits {list(logits.shape)}, expected [{len(batch[1])}, {n_cls}]")
    first = sets[0][1]
    location = locate(getattr(type(first), "__getitem__", type(first)))
    metrics["problems"] = len(problems)
    if problems:
        return Outcome(Status.FAIL, f"{len(problems)} problem(s): {problems[0]}", metrics, evidence + problems, location)
    return Outcome(Status.PASS, f"{', '.join(s for s, _ in sets)}: items and batches unpack as "
                   f"(features [T, {dim}], label in [0, {n_cls}), meta)", metrics, evidence, location)
