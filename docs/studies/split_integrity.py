"""The split-integrity line, measured: how close the mean frame features (each frame L2-normalised) of one video
read twice, re-saved or re-encoded come, against two different videos of one class across two splits; and what
the chunked comparison costs at 10k x 10k videos.

Two sources, both without trained weights (none can be downloaded here): synthetic features
(``videocoop synth``: a planted class feature plus per-frame noise and drift) and synthetic videos
(``videocoop synth-videos``: one colour and motion per class, random phases) extracted by a random-weight tower.
The last row is what ``make demo`` audits (``videocoop synth-videos`` at its defaults, random ViT-B-32): its
closest different pair sat inside the first line drawn (0.9995), which would have failed the demo.
Real CLIP features of two clips of one scene can come closer than these; the line is drawn at the copies.

Run from the repository root: ``python docs/studies/split_integrity.py`` (a few minutes on two CPU cores: the
ViT-B-32 extraction dominates); the output of a run is kept beside this script: ``split_integrity.txt``.
"""
import copy
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]  # docs/studies/ -> the repository root
sys.path[:0] = [str(ROOT)]
warnings.simplefilter("ignore")

from checks.audits.split_integrity import DUPLICATE_COSINE, nearest, read_split  # noqa: E402
from videocoop.clip import TINY_MODEL  # noqa: E402
from videocoop.data import FeatureDataset, synthesize  # noqa: E402
from videocoop.video import ExtractConfig, extract  # noqa: E402
from videocoop.video.synthetic import PATTERNS, encode_video, pattern_frames, synthesize_videos  # noqa: E402


def mean_feature(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.normalize(x.float(), dim=-1).mean(0), dim=0)


def fmt(v: float, which: str) -> str:
    """A cosine to 7 places and 1 - cosine (the copies sit near 1: the distance tells them apart)."""
    return f"{v:.7f} | {1 - v:.1e} ({which})"


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(mean_feature(a) @ mean_feature(b))


def synthetic_features(clip_model: str, tmp: Path) -> list[str]:
    out = synthesize(tmp / clip_model, clip_model=clip_model, n_classes=10, train_per_class=6, val_per_class=3,
                     num_frames=16, seed=3)
    train = FeatureDataset(out["train"], num_frames=8, train=True, seed=0)
    val = FeatureDataset(out["val"], classnames=train.classnames, num_frames=8)
    a, b = read_split("train", train, train.classnames), read_split("val", val, train.classnames)
    best, _ = nearest(b.features, a.features)
    g = torch.Generator().manual_seed(0)
    reread, fp16, noisy, dropped = [], [], [], []
    evaluation = copy.copy(train)
    evaluation.train = False
    for i in range(len(train)):
        stored = evaluation._cache[i]  # [16, D]: the file as stored
        reread.append(cos(train[i].features, evaluation[i].features))  # training's random frames vs the middles
        fp16.append(cos(stored, stored.half().float()))
        noise = torch.randn(stored.shape, generator=g) * 1e-3 * stored.norm(dim=-1, keepdim=True) / stored.shape[-1] ** .5
        noisy.append(cos(stored, (stored + noise).half().float()))
        dropped.append(cos(stored, stored[1:]))
    return [f"| synthetic features, {clip_model} | two different videos of a class, train vs val (largest) | "
            f"{fmt(float(best.max()), 'largest')} |",
            f"| synthetic features, {clip_model} | one video: 8 random frames (training) vs the 8 segment middles | "
            f"{fmt(min(reread), 'smallest')} |",
            f"| synthetic features, {clip_model} | one video re-saved in fp16 | {fmt(min(fp16), 'smallest')} |",
            f"| synthetic features, {clip_model} | one video re-extracted (1e-3 noise, fp16) | {fmt(min(noisy), 'smallest')} |",
            f"| synthetic features, {clip_model} | one video, first of 16 frames dropped | {fmt(min(dropped), 'smallest')} |"]


def extracted_videos(clip_model: str, tmp: Path) -> list[str]:
    """Each video encoded twice (MPEG-4 in .mp4 for train, .avi for val: the same frames, another file), plus
    two more videos per class in val that are not in train."""
    rng = np.random.default_rng(0)
    videos = tmp / f"videos-{clip_model}"
    for name, colour, motion in PATTERNS[:4]:
        for k in range(4):
            frames = pattern_frames(motion, colour, 16, 64, 96, rng)
            encode_video(videos / "train" / name / f"{name}_{k}.mp4", frames)
            if k < 2:  # the same video again in val, as another file
                encode_video(videos / "val" / name / f"{name}_{k}.avi", frames)
        for k in range(2):
            encode_video(videos / "val" / name / f"{name}_other{k}.mp4", pattern_frames(motion, colour, 16, 64, 96, rng))
    feats = tmp / f"features-{clip_model}"
    extract(ExtractConfig(videos=str(videos), out=str(feats), clip_model=clip_model, num_frames=8, device="cpu",
                          num_workers=0, progress="none"))
    train = FeatureDataset(feats / "train")
    val = FeatureDataset(feats / "val", classnames=train.classnames)
    a, b = read_split("train", train, train.classnames), read_split("val", val, train.classnames)
    best, which = nearest(b.features, a.features)
    # the feature files keep the video's stem: "<class>_<k>" is a train video again, "<class>_other<k>" is not
    same = [float(best[j]) for j, (p, _) in enumerate(val.files) if "_other" not in Path(p).stem]
    other = [float(best[j]) for j, (p, _) in enumerate(val.files) if "_other" in Path(p).stem]
    return [f"| synthetic videos, random {clip_model} | one video re-encoded (.mp4 vs .avi, other file) | "
            f"{fmt(min(same), 'smallest')} |",
            f"| synthetic videos, random {clip_model} | two different videos of a class (same pattern, other phase) | "
            f"{fmt(max(other), 'largest')} |"]


def demo(tmp: Path) -> list[str]:
    """What ``make demo`` audits: ``videocoop synth-videos`` at its defaults, extracted by random ViT-B-32."""
    synthesize_videos(tmp / "demo-videos")
    feats = tmp / "demo-features"
    extract(ExtractConfig(videos=str(tmp / "demo-videos"), out=str(feats), clip_model="ViT-B-32", device="cpu",
                          num_workers=0, progress="none"))
    train = FeatureDataset(feats / "train")
    val = FeatureDataset(feats / "val", classnames=train.classnames)
    a, b = read_split("train", train, train.classnames), read_split("val", val, train.classnames)
    best, _ = nearest(b.features, a.features)
    return [f"| make demo: synth-videos defaults, random ViT-B-32 | two different videos (val vs train, largest) | "
            f"{fmt(float(best.max()), 'largest')} |"]


def cost() -> str:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(10_000, 512, generator=g), dim=-1)
    b = F.normalize(torch.randn(10_000, 512, generator=g), dim=-1)
    start = time.perf_counter()
    nearest(b, a)
    return f"cost: 10k validation x 10k training videos (512-d) compared in {time.perf_counter() - start:.1f} s"


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    lines = ["| source | pair | cosine of the mean frame features | 1 - cosine |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in (TINY_MODEL, "ViT-B-32"):
            lines += synthetic_features(name, Path(tmp))
        for name in (TINY_MODEL, "ViT-B-32"):
            lines += extracted_videos(name, Path(tmp))
        lines += demo(Path(tmp))
    print("\n".join(lines))
    print(f"\nthe audit's line: one video at cosine >= {DUPLICATE_COSINE}")
    print(cost() + f", 1 thread; the whole study {time.perf_counter() - start:.0f} s, torch {torch.__version__}")
