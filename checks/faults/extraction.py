"""Extraction faults (extraction-parity): extractors that go wrong the way hand-written ones do.

Each factory extracts the same few tiny videos with the tiny CLIP and one part swapped, and
returns the audit target over the written feature folder.
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD

from videocoop.clip import TINY_MODEL, load_clip
from videocoop.data import FeatureDataset
from videocoop.model import VideoFeatureCLIP
from videocoop.video import ExtractConfig, Extractor, Preprocess, Sampling, extract

from ..core import AuditTarget


EXTRACT_FRAMES = 3


class BGRPreprocess(Preprocess):
    """OpenCV's channel order: the frames reach CLIP as BGR."""

    def resize_crop(self, frames, two_pass=None):
        return super().resize_crop(frames.flip(-1), two_pass)


class DevicePathPreprocess(Preprocess):
    """Honest: the resize GPUs run (two float passes, rounded between), here on the CPU."""

    def resize_crop(self, frames, two_pass=None):
        return super().resize_crop(frames, two_pass=True)


@dataclasses.dataclass(frozen=True)
class NextFrameSampling(Sampling):
    """Takes the frame after each segment middle while features.json names segment middles."""

    def indices(self, times):
        return [min(i + 1, len(times) - 1) for i in super().indices(times)]


def imagenet_stats(pre: Preprocess) -> Preprocess:
    return dataclasses.replace(pre, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD))


def stretched(pre: Preprocess) -> Preprocess:
    """Resize straight to the square input: the picture is squashed, nothing cropped."""
    return dataclasses.replace(pre, resize_mode="squash")


def bgr(pre: Preprocess) -> Preprocess:
    return BGRPreprocess(**{f.name: getattr(pre, f.name) for f in dataclasses.fields(pre)})


def _scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=4)
def fault_videos(width: int = 64, height: int = 48, frames: int = 7, per_class: int = 1) -> Path:
    """Two classes of tiny synthetic videos (seeded), written once per session."""
    from videocoop.video import synthesize_videos

    root = _scratch("videocoop-videos-")
    synthesize_videos(root, n_classes=2, train_per_class=per_class, val_per_class=0, frames=frames, width=width,
                      height=height)
    return root / "train"


@functools.lru_cache(maxsize=1)
def untimed_videos(frames: int = 7) -> Path:
    """Two classes of one raw H.264 stream each (no container: its frames carry no timestamps,
    as a camera's or ``ffmpeg -f h264``'s dump), under a suffix the extractor takes."""
    import numpy as np

    from videocoop.video import encode_raw_h264

    root = _scratch("videocoop-untimed-")
    rng = np.random.default_rng(0)
    for name, colour in (("red_square", (220, 40, 40)), ("green_square", (40, 200, 60))):
        pictures = rng.integers(0, 80, (frames, 48, 64, 3), dtype=np.uint8)  # [T, H, W, 3] noise
        for t in range(frames):
            pictures[t, 10:30, 4 * t:4 * t + 20] = colour  # a square moving right
        (root / name).mkdir()
        encode_raw_h264(root / name / f"{name}.ts", pictures, fps=8)  # FFmpeg reads the content, not the suffix
    return root


def extracted(clip, tok, names=None, *, preprocess=None, sampling=None, tower=None, videos=None,
              precision="fp32", dtype="float16", clip_name=TINY_MODEL, weights="random:0") -> AuditTarget:
    """Extract ``videos`` (default :func:`fault_videos`) with ``clip``'s parts, one swapped, and
    return the target over the feature folder. ``tower`` encodes instead of ``clip`` while
    features.json still names ``clip`` (another tower's features)."""
    base = Preprocess.from_model(clip)
    extractor = Extractor(tower or clip, clip_name, weights, sampling or Sampling(EXTRACT_FRAMES),
                          preprocess(base) if callable(preprocess) else (preprocess or base),
                          torch.device("cpu"), precision, batch_size=64, num_workers=0)
    out = _scratch("videocoop-features-")
    videos = videos or fault_videos()
    extract(ExtractConfig(videos=str(videos), out=str(out), clip_model=clip_name, dtype=dtype, progress="none",
                          num_workers=0), extractor)
    ds = FeatureDataset(out)
    model = VideoFeatureCLIP(ds.classnames, clip, tok, n_ctx=4)
    return AuditTarget(model, ds.classnames, clip, tok, dataset=ds, clip_name=clip_name, weights=weights)


def extraction_clean(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok)


def extraction_untimed(clip, tok, names=None) -> AuditTarget:
    """Honest: frames without timestamps, timed by the frame rate (videocoop.video.FrameClock)."""
    return extracted(clip, tok, videos=untimed_videos())


def bgr_frames(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, preprocess=bgr)


def imagenet_normalised(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, preprocess=imagenet_stats)


def stretched_resize(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, preprocess=stretched)


def next_frames(clip, tok, names=None) -> AuditTarget:
    return extracted(clip, tok, sampling=NextFrameSampling(EXTRACT_FRAMES))


@functools.lru_cache(maxsize=1)
def _other_tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_MODEL, seed=1)[0]


def other_tower(clip, tok, names=None) -> AuditTarget:
    """Features of the tiny architecture with other weights (seed 1), labelled as seed 0's."""
    return extracted(clip, tok, tower=_other_tiny())
