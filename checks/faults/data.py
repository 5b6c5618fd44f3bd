"""Data faults (dataset-unpacking, class-order, feature-model-match): in-memory datasets whose
items, labels, class lists or features.json go wrong the way real ones do."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from videocoop.clip import TINY_MODEL, embed_dim

from ..core import AuditTarget
from .clean import FRAMES, clean


class Sample(NamedTuple):
    """An item with VideoSample's fields (what videocoop.data.collate_samples reads)."""

    features: torch.Tensor
    label: int
    meta: dict


class Features(Dataset):
    """In-memory frame features; ``fields`` 3 gives (features, label, meta), 2 drops meta.

    With ``classnames`` the dataset lists them (``.classnames``, as FeatureDataset does), labels
    index that list and each item's meta path lies in its class's folder (under ``split``'s folder when
    given). ``seed`` draws the videos: two splits with their own seeds hold different videos."""

    def __init__(self, n_cls, dim, per_class=2, label_offset=0, fields=3, info=None, classnames=None, lengths=(FRAMES,),
                 seed=0, split=""):
        g = torch.Generator().manual_seed(seed)
        n = len(classnames) if classnames is not None else n_cls
        self.items = [(torch.randn(lengths[(c * per_class + v) % len(lengths)], dim, generator=g), c + label_offset)
                      for c in range(n) for v in range(per_class)]
        self.fields, self.info, self.dim, self.split = fields, info, dim, split
        if classnames is not None:
            self.classnames = list(classnames)

    def __len__(self):
        return len(self.items)

    @property
    def labels(self):
        return [label for _, label in self.items]

    def __getitem__(self, i):
        features, label = self.items[i]
        if self.fields == 2:
            return features, label
        names = getattr(self, "classnames", None)
        path = f"{names[label]}/v{i}.npy" if names and 0 <= label < len(names) else f"v{i}.npy"
        path = f"{self.split}/{path}" if self.split else path
        return Sample(features, label, {"video_id": f"v{i}", "path": path, "num_frames": FRAMES})


def info_for(clip, clip_name=TINY_MODEL, weights="random:0") -> dict:
    return {"clip_model": clip_name, "weights": weights, "num_frames": FRAMES, "dim": embed_dim(clip)}


def with_data(clip, tok, names, **kwargs) -> AuditTarget:
    """The clean model with a training split (``kwargs`` go to it) and a validation split, both
    listing the classes in the prompts' order."""
    target = clean(clip, tok, names)
    kwargs.setdefault("info", info_for(clip))
    kwargs.setdefault("classnames", names)
    kwargs.setdefault("split", "train")
    target.dataset = Features(len(names), embed_dim(clip), **kwargs)
    target.val_dataset = Features(len(names), embed_dim(clip), per_class=1, info=info_for(clip), classnames=names, seed=1,
                                  split="val")
    return target


def two_field_items(clip, tok, names) -> AuditTarget:
    """A dataset yielding (features, label)."""
    return with_data(clip, tok, names, fields=2)


def variable_length_tuples(clip, tok, names) -> AuditTarget:
    """Videos of 2 to 5 frames as plain (features, label, meta) tuples, and no collate_fn: the
    DataLoader's default collate cannot stack them."""
    return with_data(clip, tok, names, lengths=(2, 3, 4, 5))


def labels_from_one(clip, tok, names) -> AuditTarget:
    return with_data(clip, tok, names, label_offset=1, classnames=None)


def val_split_lacks_a_class(clip, tok, names) -> AuditTarget:
    """A validation folder without videos of one class, read without training's class list:
    its sorted folders number the classes after the missing one one lower (labels shift)."""
    target = with_data(clip, tok, names)
    kept = [c for i, c in enumerate(names) if i != 1]
    target.val_dataset = Features(len(kept), embed_dim(clip), per_class=1, info=info_for(clip), classnames=kept, seed=1,
                                  split="val")
    return target


def checkpoint_other_classes(clip, tok, names) -> AuditTarget:
    """Resuming from a checkpoint that was trained on the same names in another order."""
    target = with_data(clip, tok, names)
    target.checkpoint = {"classnames": list(names[1:]) + list(names[:1]), "trainable": {}}
    return target


def features_from_other_clip(clip, tok, names) -> AuditTarget:
    """features.json names another CLIP than the model's."""
    return with_data(clip, tok, names, info=info_for(clip, clip_name="ViT-B-16", weights="openai"))
