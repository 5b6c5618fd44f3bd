"""Which frames of a video a sample takes: segment middles in evaluation, a counter-based random position per segment in training."""
from __future__ import annotations

import numpy as np
import torch

from ..utils.seeding import GOLDEN, seed_hash, splitmix


def frame_indices(length: int, num_frames: int, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """TSN-style uniform sampling of ``num_frames`` of ``length`` frames (one video).

    The video is cut into ``num_frames`` equal segments; evaluation takes the middle of
    each (deterministic), ``train`` a random position drawn from ``generator``. The
    datasets draw training's positions with :func:`frame_offsets` instead.
    """
    offsets = torch.rand(num_frames, generator=generator, dtype=torch.float64).numpy() if train else 0.5
    return torch.from_numpy(segment_frames([length], num_frames, offsets)[0])



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
    equal segments: ``[B, num_frames]`` indices (0.5: the middles, evaluation's choice).
    Short videos repeat frames."""
    lengths = np.asarray(lengths, dtype=np.int64)  # [B]
    idx = ((np.arange(num_frames) + offsets) * (lengths[:, None] / num_frames)).astype(np.int64)  # [B, F]
    return np.minimum(idx, lengths[:, None] - 1)
