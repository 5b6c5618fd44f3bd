"""Small real video files with a known class: a start for users without data, and test inputs.

Each class is a visually distinct pattern of colour and motion: a coloured shape that
slides, rises, spins or pulses over a noisy background. Every video draws its own
start, speed, size, colour shade and pixel noise from the seed, so no two are alike but
a class stays recognisable. The files are encoded with the decoding library itself
(PyAV; MPEG-4 with B-frames by default, whose bytes are the same on every run),
each written to a temporary name and renamed, so a stopped run leaves no half-written video.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..utils.errors import VideoCoopError

#: (name, RGB colour, motion): the classes, in order; ``n_classes`` takes the first n.
PATTERNS = (
    ("red_slide", (220, 40, 40), "slide"),
    ("green_rise", (40, 200, 60), "rise"),
    ("blue_spin", (50, 80, 230), "spin"),
    ("yellow_pulse", (230, 210, 40), "pulse"),
    ("magenta_bounce", (210, 50, 200), "bounce"),
    ("cyan_zigzag", (40, 210, 220), "zigzag"),
)
#: Container and codec per file suffix (every one encodes with PyAV's bundled FFmpeg). MPEG-4
#: Part 2 and VP9 give the same bytes on every run; libx264 does not (measured: a third of
#: the files differ between two runs on a busy machine, even with one thread), so H.264
#: is the .mkv choice, for tests that need it, and not the default.
FORMATS = {".mp4": ("mp4", "mpeg4"), ".avi": ("avi", "mpeg4"), ".mkv": ("matroska", "libx264"),
           ".webm": ("webm", "libvpx-vp9")}


def encode_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8, gop: int = 4, codec: str | None = None) -> Path:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` (H a multiple of 4, W even) into ``path``, atomically.

    Args:
        path: the file; its suffix picks container and codec (:data:`FORMATS`).
        frames: the pictures.
        fps: frames per second.
        gop: a keyframe every ``gop`` frames (short, so that seeking has keyframes to land on).
        codec: another encoder than the suffix's (e.g. ``libx264`` in an .mp4).
    """
    path = Path(path)
    if path.suffix not in FORMATS:
        raise VideoCoopError(f"cannot write {path}: suffix {path.suffix!r}; choose one of {', '.join(FORMATS)}")
    T, H, W, C = frames.shape
    if C != 3 or H % 4 or W % 2 or frames.dtype != np.uint8:
        raise VideoCoopError(f"frames must be uint8 [T, H, W, 3], H a multiple of 4 and W even, got {frames.dtype} "
                             f"{list(frames.shape)}")
    fmt, default = FORMATS[path.suffix]
    codec = codec or default
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format=fmt, options={"fflags": "+bitexact"}) as container:  # no random ids, no dates
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1  # encoders' threads make the bytes differ from run to run
        # B-frames (decode order != display order, as in real videos) in every codec but VP9
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "bf": "2", "threads": "1"}
        elif codec == "mpeg4":
            stream.codec_context.bit_rate = 4_000_000  # small pictures: near-lossless
            stream.options = {"bf": "2"}
        for t, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(yuv420p(picture), format="yuv420p")
            frame.pts, frame.time_base = t, Fraction(1, fps)  # explicit: the encoder's rate control reads them
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB ``[H, W, 3]`` -> planar YUV 4:2:0 ``[3H/2, W]`` (BT.601, limited range, what decoders
    assume for untagged video), in numpy: FFmpeg's converter, fed RGB under load, gave other
    bytes from run to run."""
    H, W, _ = rgb.shape
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.2568 * r + 0.5041 * g + 0.0979 * b
    u = 128 - 0.1482 * r - 0.2910 * g + 0.4392 * b
    v = 128 + 0.4392 * r - 0.3678 * g - 0.0714 * b
    u, v = (c.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)) for c in (u, v))  # [H/2, W/2]: 2x2 chroma
    planes = [np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v)]
    return np.concatenate([planes[0], planes[1].reshape(H // 4, W), planes[2].reshape(H // 4, W)])


def encode_raw_h264(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> Path:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` as a raw H.264 stream into ``path``, atomically: no
    container, so its frames carry no timestamps (as a camera's or ``ffmpeg -f h264``'s dump), under
    any name (FFmpeg reads the content). libx264's defaults and FFmpeg's RGB -> YUV conversion."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for t, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def pattern_frames(motion: str, colour: Sequence[int], frames: int, height: int, width: int,
                   rng: np.random.Generator, noise: float = 24.0) -> np.ndarray:
    """One video of a pattern: uint8 ``[frames, height, width, 3]``.

    A shape of ``colour`` (shade jittered) moving by ``motion`` over a dark background
    with a random tint, plus Gaussian pixel noise of std ``noise``.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width  # [H, W] in [0, 1)
    colour = np.clip(np.asarray(colour, np.float32) + rng.normal(0, 15, 3), 0, 255)
    background = rng.uniform(10, 60, 3).astype(np.float32)
    phase, speed = rng.uniform(0, 1), rng.uniform(0.7, 1.3)
    size = rng.uniform(0.12, 0.2)
    cx0, cy0 = rng.uniform(0.3, 0.7, 2)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        s = phase + speed * t / max(frames, 1)  # progress of the motion, in cycles
        cx, cy = cx0, cy0
        if motion == "slide":
            cx = s % 1.0
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < size ** 2
        elif motion == "rise":
            cy = 1.0 - s % 1.0
            mask = np.abs(yy - cy) < size / 2  # a horizontal bar moving up
        elif motion == "spin":
            angle = 2 * math.pi * s
            d = (xx - 0.5) * math.sin(angle) - (yy - 0.5) * math.cos(angle)
            along = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
            mask = (np.abs(d) < size / 3) & (np.abs(along) < 0.4)  # a rotating stick
        elif motion == "pulse":
            r = size * (1.0 + 0.8 * math.sin(2 * math.pi * 2 * s))
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        elif motion == "bounce":
            cy = 0.2 + 0.6 * abs(math.sin(math.pi * 2 * s))
            mask = (np.abs(xx - cx) < size) & (np.abs(yy - cy) < size)  # a square going up and down
        elif motion == "zigzag":
            cx, cy = s % 1.0, 0.5 + 0.3 * math.sin(2 * math.pi * 3 * s)
            mask = (np.abs(xx - cx) + np.abs(yy - cy)) < size  # a diamond on a zigzag path
        else:
            raise VideoCoopError(f"unknown motion {motion!r}; choose one of {', '.join(p[2] for p in PATTERNS)}")
        picture = np.where(mask[..., None], colour, background) + rng.normal(0, noise, (height, width, 3))
        out[t] = np.clip(picture, 0, 255).astype(np.uint8)
    return out


def synthesize_videos(
    out_dir: str | os.PathLike,
    *,
    n_classes: int = 4,
    train_per_class: int = 8,
    val_per_class: int = 4,
    frames: int = 16,
    width: int = 96,
    height: int = 64,
    fps: int = 8,
    suffix: str = ".mp4",
    seed: int = 0,
) -> dict:
    """Write ``out_dir/{train,val}/<class>/<class>_<split><k>.<suffix>``.

    Args:
        out_dir: the root; existing files of the same names are replaced, nothing else
            is touched.
        n_classes: how many of :data:`PATTERNS` (at most their number).
        train_per_class, val_per_class: videos per class in each split (0 skips a split).
        frames, width, height, fps: each video's length and size (even width, height a multiple of 4).
        suffix: container and codec (:data:`FORMATS`).
        seed: every random draw (the same files on every run).

    Returns:
        ``{"classnames", "train", "val", "videos"}``: the class names, the split folders
        and the number of files written.
    """
    if not 1 <= n_classes <= len(PATTERNS):
        raise VideoCoopError(f"n_classes must be in 1..{len(PATTERNS)}, got {n_classes}")
    for key, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if value < 0:
            raise VideoCoopError(f"{key} must be >= 0, got {value}")
    if frames < 1 or fps < 1:
        raise VideoCoopError(f"frames and fps must be >= 1, got frames={frames}, fps={fps}")
    if width < 16 or height < 16 or width % 2 or height % 4:
        raise VideoCoopError(f"width must be even, height a multiple of 4, both >= 16; got {width}x{height}")
    if suffix not in FORMATS:
        raise VideoCoopError(f"unknown video suffix {suffix!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    written = 0
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for name, colour, motion in PATTERNS[:n_classes]:
            for k in range(per_class):
                pixels = pattern_frames(motion, colour, frames, height, width, rng)
                encode_video(out / split / name / f"{name}_{split}{k:02d}{suffix}", pixels, fps=fps)
                written += 1
    return {"classnames": [p[0] for p in PATTERNS[:n_classes]], "train": str(out / "train"), "val": str(out / "val"),
            "videos": written}
