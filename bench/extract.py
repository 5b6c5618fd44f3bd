"""``python -m bench extract``: decoding alone, encoding alone and the whole extraction pipeline.

The same generated videos go through each stage with the same chunks as ``videocoop
extract``: decoding is the DataLoader of decoding workers with nothing downstream;
encoding is preprocessing and the image tower on frames decoded beforehand and kept in
memory; the pipeline is :class:`videocoop.video.Extractor` itself, workers decoding the
next chunks while the main process encodes. The overlap works when the pipeline reaches
the slower stage's rate (target: at least 80% of it). Writes ``bench/results-extract.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from videocoop.utils.distributed import resolve_device
from videocoop.video import ExtractConfig, Extracted, Extractor, find_videos
from videocoop.video.sources import chunked
from videocoop.video.synthetic import PATTERNS, encode_video, pattern_frames

DEFAULT_OUT = Path(__file__).with_name("results-extract.json")
#: The pipeline must reach this fraction of its slower stage.
OVERLAP_TARGET = 0.8


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench extract", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32", help="open_clip model, random weights (videocoop-tiny: a smoke run)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--videos", type=int, default=24, help="generated videos")
    p.add_argument("--frames", type=int, default=75, help="frames per video (25 fps: 3 s)")
    p.add_argument("--size", default="320x240", help="WxH of the videos")
    p.add_argument("--num-frames", type=int, default=8, help="frames kept per video")
    p.add_argument("--batch-size", type=int, default=64, help="frames per forward")
    p.add_argument("--num-workers", type=int, default=None, help="decoding workers (default: extract's default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the main process (default: torch's)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each stage (the median is reported)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def make_videos(root: Path, n: int, frames: int, width: int, height: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        name, colour, motion = PATTERNS[i % len(PATTERNS)]
        encode_video(root / name / f"v{i:03d}.mp4", pattern_frames(motion, colour, frames, height, width, rng), fps=25, gop=12, codec="libx264")
    return root


def _rate(videos: int, frames: int, seconds: float) -> dict:
    return {"seconds": seconds, "videos": videos, "frames": frames, "videos_per_s": videos / seconds,
            "frames_per_s": frames / seconds}


def time_decoding(ex: Extractor, chunks) -> tuple[dict, list[dict]]:
    t0 = time.perf_counter()
    decoded = list(ex.decoded(chunks))  # the decoded pieces, every frame kept in memory
    seconds = time.perf_counter() - t0
    frames = sum(len(it.get("indices", ())) for it in decoded)
    return _rate(sum(len(c) for c in chunks), frames, seconds), decoded


def time_encoding(ex: Extractor, chunks, decoded) -> dict:
    t0 = time.perf_counter()
    n = frames = 0
    for result in ex.consume(chunks, [dict(it) for it in decoded]):  # copies: consume takes the frames out
        n += 1
        frames += result.features.shape[0]
    if ex.device.type == "cuda":
        torch.cuda.synchronize()
    return _rate(n, frames, time.perf_counter() - t0)


def time_pipeline(ex: Extractor, chunks) -> dict:
    t0 = time.perf_counter()
    n = frames = 0
    for result in ex.run(chunks):
        assert isinstance(result, Extracted), result
        n += 1
        frames += result.features.shape[0]
    return _rate(n, frames, time.perf_counter() - t0)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=None if sys.stdout.isatty() else 140)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)
    cfg = ExtractConfig(clip_model=args.model, device=str(device), precision=args.precision, num_frames=args.num_frames,
                        batch_size=args.batch_size, num_workers=args.num_workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = Extractor.from_config(cfg, device)
    rows = {"decoding": [], "encoding": [], "pipeline": []}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        console.print(f"writing {args.videos} videos of {args.frames} frames, {width}x{height}")
        _, entries = find_videos(make_videos(Path(tmp), args.videos, args.frames, width, height))
        chunks = chunked(entries, ex.videos_per_chunk())
        time_encoding(ex, chunks[:1], time_decoding(ex, chunks[:1])[1])  # warm-up: first forward, allocator
        for r in range(args.repeats):
            console.print(f"run {r + 1}/{args.repeats}: decoding, encoding, pipeline")
            rate, decoded = time_decoding(ex, chunks)
            rows["decoding"].append(rate)
            rows["encoding"].append(time_encoding(ex, chunks, decoded))
            rows["pipeline"].append(time_pipeline(ex, chunks))
    median = {k: {m: statistics.median(r[m] for r in v) for m in ("videos_per_s", "frames_per_s", "seconds")}
              for k, v in rows.items()}
    slower = min(median["decoding"]["frames_per_s"], median["encoding"]["frames_per_s"])
    ratio = median["pipeline"]["frames_per_s"] / slower
    from bench.__main__ import environment

    results = {
        "command": "python -m bench extract " + " ".join(sys.argv[2:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(str(device)),
        "case": {"model": args.model, "weights": "random:0", "device": str(device), "precision": ex.precision,
                 "videos": args.videos, "frames_per_video": args.frames, "size": f"{width}x{height}", "codec": "H.264",
                 "kept_frames": args.num_frames, "batch_size": args.batch_size, "workers": ex.num_workers,
                 "videos_per_chunk": ex.videos_per_chunk(), "main_threads": torch.get_num_threads()},
        "runs": rows, "median": median, "pipeline_vs_slower_stage": ratio, "target": OVERLAP_TARGET,
        "met": ratio >= OVERLAP_TARGET,
    }
    table = Table(title=f"Extraction: {args.videos} videos {width}x{height} x {args.frames} frames, keep "
                        f"{args.num_frames}; {args.model} {ex.precision} on {device}, {ex.num_workers} decoding worker(s)")
    for col in ("stage", "videos/s", "frames/s", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for k, v in median.items():
        table.add_row(k, f"{v['videos_per_s']:,.1f}", f"{v['frames_per_s']:,.1f}", f"{v['seconds']:.2f}")
    console.print(table)
    console.print(f"pipeline / slower stage = {ratio:.2f} (target >= {OVERLAP_TARGET}): "
                  + ("[green]met[/]" if results["met"] else "[red]not met[/]"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0
