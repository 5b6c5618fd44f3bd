"""Split faults (split-integrity): splits that leak or are not what they claim, the way users find them in
published splits and their own scripts (ViFi-CLIP #24, ActionCLIP #23)."""
from __future__ import annotations

import torch

from videocoop.clip import embed_dim

from ..core import AuditTarget
from .data import Features, Sample, info_for, with_data


class WithItems(torch.utils.data.Dataset):
    """A split with some items replaced: ``{index: (features, label, path)}``."""

    def __init__(self, inner, replaced: dict):
        self.inner, self.replaced, self.classnames = inner, replaced, inner.classnames
        self.info = inner.info

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        item = self.inner[i]
        if i not in self.replaced:
            return item
        features, label, path = self.replaced[i]
        return Sample(features, label, {**item.meta, "path": path})


def val_copies_train(clip, tok, names) -> AuditTarget:
    """A training video copied into the validation folder (another file, the same features)."""
    target = with_data(clip, tok, names)
    features, label, _ = target.dataset[3]
    target.val_dataset = WithItems(target.val_dataset, {label: (features.clone(), label, f"val/{names[label]}/copy.npy")})
    return target


def val_reextracts_train(clip, tok, names) -> AuditTarget:
    """A training video decoded and extracted again into the validation split: the codec's and fp16's rounding
    (a relative 1e-3 of noise), not one bit the same."""
    target = with_data(clip, tok, names)
    features, label, _ = target.dataset[4]
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(3))
    again = (features + 1e-3 * features.norm(dim=-1, keepdim=True) / features.shape[-1] ** 0.5 * noise).half().float()
    target.val_dataset = WithItems(target.val_dataset, {label: (again, label, f"val/{names[label]}/again.npy")})
    return target


def duplicate_class_names(clip, tok, names) -> AuditTarget:
    """One class listed twice, once with '_' and once with a space (two label files merged)."""
    twin = [n for n in names if "_" in n][0].replace("_", " ")
    listed = list(names) + [twin]
    target = with_data(clip, tok, listed)
    return target


def class_without_videos(clip, tok, names) -> AuditTarget:
    """The training split lists every class but holds no video of the last one (a list of 221 for 220)."""
    target = with_data(clip, tok, names)
    kept = Features(len(names), embed_dim(clip), info=info_for(clip), classnames=names, split="train")
    kept.items = [(x, y) for x, y in kept.items if y != len(names) - 1]
    target.dataset = kept
    return target


def base_novel_overlap(clip, tok, names) -> AuditTarget:
    """A base-to-novel split whose novel list repeats a base class (written as a prompt shows it)."""
    target = with_data(clip, tok, names[:3])
    target.novel_classnames = [names[3], names[2].replace("_", " ")]
    return target


def unequal_shots(clip, tok, names) -> AuditTarget:
    """A 2-shot split where one class kept 3 videos (the draw took every video of a class with ties)."""
    target = with_data(clip, tok, names)
    target.shots = 2
    extra = torch.randn(4, embed_dim(clip), generator=torch.Generator().manual_seed(5))
    target.dataset.items.append((extra, 0))
    return target


def kshot_clean(clip, tok, names) -> AuditTarget:
    """Our clean model with a 2-shot split declared and held (two videos per class)."""
    target = with_data(clip, tok, names)
    target.shots = 2
    return target


__all__ = ["WithItems", "base_novel_overlap", "class_without_videos", "duplicate_class_names", "kshot_clean",
           "unequal_shots", "val_copies_train", "val_reextracts_train"]
