"""A video sample and a batch of them: the seed's ``features, label, meta = dataset[i]``.

Both datasets (:class:`~videocoop.data.features.FeatureDataset`,
:class:`~videocoop.data.packed.PackedFeatureDataset`) return :class:`VideoSample` items,
and :func:`collate_samples` batches them into one (features zero-padded to the longest
video, a ``mask`` when lengths differ), so a loop unpacks an item and a batch alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class VideoSample(NamedTuple):
    """One video (or a batch): unpacks as ``features, label, meta``, as the seed's loops expect.

    Attributes:
        features: ``[T, D]`` frame features; batched ``[B, T, D]``.
        label: class index; batched LongTensor ``[B]``.
        meta: ``video_id``, ``path``, ``num_frames`` (frames in the file); batched, a dict
            of lists plus ``mask`` BoolTensor ``[B, T]`` when videos were padded.
    """

    features: torch.Tensor
    label: int | torch.Tensor
    meta: dict


def collate_samples(items: Sequence[VideoSample]) -> VideoSample:
    """Batch samples: features ``[B, T, D]`` zero-padded to the longest, labels ``[B]``.

    When lengths differ, ``meta["mask"]`` ``[B, T]`` marks the real frames; the model
    averages over those only.
    """
    lengths = [x.features.shape[0] for x in items]
    T = max(lengths)
    features = items[0].features.new_zeros(len(items), T, items[0].features.shape[1])  # [B, T, D]
    for b, x in enumerate(items):
        features[b, : lengths[b]] = x.features
    labels = torch.tensor([int(x.label) for x in items], dtype=torch.long)  # [B]
    meta = {k: [x.meta[k] for x in items] for k in items[0].meta}
    if min(lengths) != T:
        meta["mask"] = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # [B, T]
    return VideoSample(features, labels, meta)
