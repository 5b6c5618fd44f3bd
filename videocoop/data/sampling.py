"""Which frames of a video a sample takes (TSN-style): the video is cut into ``num_frames``
equal segments and one frame is taken at an offset in [0, 1) within each.

- Evaluation takes each segment's middle (:data:`MIDDLE`): :func:`frame_indices` for one
  video, the same frames the datasets' evaluation, the extractor and ``predict`` take.
- Training takes a random position per segment, a pure function of (seed, epoch, video,
  segment) (:func:`frame_offsets`), so every process and worker agrees without RNG state.
- :func:`segment_frames` turns offsets into frame indices for a batch of videos; the
  feature datasets call it with either.
"""
from __future__ import annotations

import numpy as np
import torch

from ..utils.seeding import GOLDEN, seed_hash, splitmix

#: Evaluation's offset within each segment: its middle frame, deterministic.
MIDDLE = 0.5
#: The most frames a sample takes from one video: video CLIP models take 8 to 64, and a batch
#: of 32 videos of 10k frames of 512 floats is already 650 MB (more is a typo, not a setting).
MAX_FRAMES = 10_000


def frame_indices(length: int, num_frames: int) -> torch.Tensor:
    """Evaluation's ``num_frames`` frames of one video of ``length`` frames: each segment's
    middle, ``[num_frames]`` (short videos repeat frames)."""
    return torch.from_numpy(segment_frames([length], num_frames, MIDDLE)[0])


def frame_offsets(seed: int, epoch: int, indices, num_frames: int) -> np.ndarray:
    """Training's random position within each of ``num_frames`` segments, ``[len(indices),
    num_frames]`` in [0, 1): a pure function of (seed, epoch, video index, segment).

    A video gets the same frames whichever process, DataLoader worker or batch reads it,
    and a resumed run draws what an uninterrupted one draws, with no RNG state to carry.
    Counter-based (splitmix64 on numpy's uint64 arrays, vectorised over the batch): neither
    torch nor numpy offers a counter-based generator that is this cheap per item.
    """
    key = np.uint64(seed_hash(seed, epoch))
    with np.errstate(over="ignore"):
        per_video = splitmix(key ^ splitmix(np.asarray(indices, dtype=np.uint64)))  # [B]
        z = splitmix(per_video[:, None] + np.arange(1, num_frames + 1, dtype=np.uint64) * GOLDEN)  # [B, F]
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def segment_frames(lengths, num_frames: int, offsets: np.ndarray | float) -> np.ndarray:
    """Frame ``k`` of each video taken at ``offsets[b, k]`` within segment ``k`` of ``num_frames``
    equal segments: ``[B, num_frames]`` indices (:data:`MIDDLE`: evaluation's choice).
    Short videos repeat frames."""
    lengths = np.asarray(lengths, dtype=np.int64)  # [B]
    idx = ((np.arange(num_frames) + offsets) * (lengths[:, None] / num_frames)).astype(np.int64)  # [B, F]
    return np.minimum(idx, lengths[:, None] - 1)


__all__ = ["MIDDLE", "frame_indices", "frame_offsets", "segment_frames"]
