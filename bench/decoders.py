"""``python -m bench decoders``: the video decoders that install from PyPI, side by side.

Each decoder takes the same 8 frames (segment middles) from each of the same generated
H.264 videos in MP4 (``--codec mpeg4``: MPEG-4 Part 2 with B-frames in AVI, UCF101's and
HMDB51's kind); the table gives videos/s, whether it gave the same pixels as PyAV's plain
decode (every frame in order), whether it counted the frames right, and what it returns.
Decoders that are not installed (``pip install decord opencv-python-headless
torchcodec``) or do not load are listed with the reason. Writes
``bench/results-decoders.json``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from videocoop.data import frame_indices
from videocoop.video import Sampling, read_frames

DEFAULT_OUT = Path(__file__).with_name("results-decoders.json")
#: --codec: the file suffix, the encoder, what the results call it.
CODECS = {"h264": (".mp4", "libx264", "H.264 (libx264, B-frames) in MP4"),
          "mpeg4": (".avi", "mpeg4", "MPEG-4 Part 2 (B-frames) in AVI")}


def _pyav_seek(path: Path, n: int):
    return read_frames(path, Sampling(n)).frames.numpy()


def _pyav_plain(path: Path, n: int):
    return read_frames(path, Sampling(n), seek=False).frames.numpy()


def _decord(path: Path, n: int):
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    idx = frame_indices(len(vr), n).tolist()
    return vr.get_batch(idx).asnumpy()  # RGB


def _opencv(path: Path, n: int):
    import cv2

    cap = cv2.VideoCapture(str(path))
    length = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = []
    for i in frame_indices(length, n).tolist():
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)  # OpenCV's seek
        ok, frame = cap.read()
        if not ok:
            raise RuntimeError(f"OpenCV could not read frame {i} of {length}")
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))  # OpenCV decodes BGR
    cap.release()
    return np.stack(out)


def _torchcodec(path: Path, n: int):
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(path))
    idx = frame_indices(dec.metadata.num_frames, n).tolist()
    return dec.get_frames_at(indices=idx).data.permute(0, 2, 3, 1).numpy()


def _torchvision(path: Path, n: int):
    import torchvision.io as io

    if not hasattr(io, "read_video"):
        raise RuntimeError(f"torchvision {importlib.metadata.version('torchvision')} has no video decoding (torchvision.io.read_video was removed)")
    frames, _, _ = io.read_video(str(path), output_format="THWC", pts_unit="sec")
    return frames[frame_indices(frames.shape[0], n)].numpy()


DECODERS = {
    "pyav (seeking, ours)": ("av", _pyav_seek, "RGB"),
    "pyav (every frame)": ("av", _pyav_plain, "RGB"),
    "decord": ("decord", _decord, "RGB"),
    "opencv-python-headless": ("opencv-python-headless", _opencv, "BGR (converted here)"),
    "torchcodec": ("torchcodec", _torchcodec, "RGB"),
    "torchvision.io": ("torchvision", _torchvision, "RGB"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench decoders", description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--frames", type=int, default=250, help="frames per video (25 fps)")
    p.add_argument("--size", default="320x240")
    p.add_argument("--gop", type=int, default=25, help="a keyframe every GOP frames")
    p.add_argument("--keep", type=int, default=8)
    p.add_argument("--codec", choices=tuple(CODECS), default="h264", help="h264: MP4 (libx264); mpeg4: AVI (Xvid's kind)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from bench.__main__ import environment
    from videocoop.video.synthetic import PATTERNS, encode_video, pattern_frames

    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decoders-") as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.videos):
            _, colour, motion = PATTERNS[i % len(PATTERNS)]
            suffix, codec, _ = CODECS[args.codec]
            paths.append(encode_video(Path(tmp) / f"v{i:03d}{suffix}", pattern_frames(motion, colour, args.frames, height,
                                                                                        width, rng),
                                      fps=25, gop=args.gop, codec=codec))
        reference = [_pyav_plain(path, args.keep) for path in paths]
        for name, (dist, fn, order) in DECODERS.items():
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                rows.append({"decoder": name, "available": False, "reason": f"{dist} is not installed"})
                print(f"{name}: not installed", flush=True)
                continue
            try:
                fn(paths[0], args.keep)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    got = [fn(path, args.keep) for path in paths]
                    times.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 (a decoder that does not load is a finding)
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                rows.append({"decoder": name, "version": version, "available": False, "reason": reason})
                print(f"{name} {version}: {reason}", flush=True)
                continue
            seconds = statistics.median(times)
            equal = sum(g.shape == r.shape and np.array_equal(g, r) for g, r in zip(got, reference))
            diff = max(float(np.abs(g.astype(int) - r.astype(int)).max()) if g.shape == r.shape else float("nan")
                       for g, r in zip(got, reference))
            rows.append({"decoder": name, "version": version, "available": True, "order": order,
                         "videos_per_s": len(paths) / seconds, "frames_per_s": len(paths) * args.keep / seconds,
                         "same_pixels_as_pyav": f"{equal}/{len(paths)}", "max_level_diff": diff})
            print(f"{name} {version}: {len(paths) / seconds:.1f} videos/s, same pixels {equal}/{len(paths)}, "
                  f"max diff {diff}", flush=True)
    results = {"command": "python -m bench decoders " + " ".join(sys.argv[2:] if argv is None else argv),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "environment": environment("cpu"),
               "case": {"videos": args.videos, "frames": args.frames, "size": args.size, "gop": args.gop, "keep": args.keep,
                        "codec": CODECS[args.codec][2]},
               "rows": rows}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0
