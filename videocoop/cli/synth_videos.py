"""``videocoop synth-videos``: small synthetic video files of a few classes
(:mod:`videocoop.video.synthetic`), a start for extract, train and predict without data."""
from __future__ import annotations

import argparse
import inspect

from ..video.synthetic import FORMATS, PATTERNS, synthesize_videos
from .common import Command, ExitCode, flag


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("synth-videos", help="write small synthetic video files of a few classes",
                            description="Write OUT/{train,val}/<class>/*.mp4: each class a distinct colour and motion "
                                        "over noise, encoded with PyAV; a start for extract, train and predict "
                                        "without data.")
    d = {k: p.default for k, p in inspect.signature(synthesize_videos).parameters.items()}
    parser.add_argument("--out", required=True, help="the root of the video tree")
    parser.add_argument("--n-classes", type=int, default=d["n_classes"],
                        help=f"1..{len(PATTERNS)} (default {d['n_classes']})")
    for name in ("train_per_class", "val_per_class", "frames", "width", "height", "fps", "seed"):
        parser.add_argument(flag(name), type=int, default=d[name], help=f"default {d[name]}")
    parser.add_argument("--format", choices=sorted(FORMATS), default=d["suffix"], help=f"default {d['suffix']}")
    return parser


def run(args: argparse.Namespace, given: set[str]) -> int:
    result = synthesize_videos(args.out, n_classes=args.n_classes, train_per_class=args.train_per_class,
                               val_per_class=args.val_per_class, frames=args.frames, width=args.width,
                               height=args.height, fps=args.fps, suffix=args.format, seed=args.seed)
    print(f"wrote {result['videos']} videos of {len(result['classnames'])} classes ({', '.join(result['classnames'])}) "
          f"to {args.out}: train/ and val/")
    return ExitCode.OK


COMMAND = Command("synth-videos", add_parser, run)
