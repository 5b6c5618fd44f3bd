"""``videocoop predict``: a trained run's top-k classes for videos or feature files
(:mod:`videocoop.eval.predict`)."""
from __future__ import annotations

import argparse
import os
import sys

from ..eval.predict import OUTPUT_FORMATS, predict, to_csv, write_predictions
from ..train.config import CHECKPOINTS
from ..utils.errors import VideoCoopError
from ..video.extract import ExtractConfig
from .common import Command, ExitCode, add_decode_arguments, prog


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("predict", help="a trained run's top-k classes for videos or feature files",
                            description="Apply a trained run to a folder of videos (extracted on the fly with the "
                                        "run's CLIP and sampling) or of feature files; one row per video. Labels are "
                                        "not needed.")
    parser.add_argument("--run", required=True, metavar="OUT", help="the --output-dir of a videocoop train run")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", metavar="SRC", help="video files, in any folder layout")
    src.add_argument("--features", metavar="DIR", help="feature files (a feature folder, flat folder or packed split)")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                        help="last (default: the model after the run's last epoch) or best (the epoch chosen on the "
                             "run's --select-feature-dir)")
    parser.add_argument("--top-k", type=int, default=5, help="classes per video (default 5)")
    parser.add_argument("--out", metavar="FILE", help=f"{' or '.join(OUTPUT_FORMATS)} (default: CSV on stdout)")
    add_decode_arguments(parser, ExtractConfig(), "default: as the run's training features")
    return parser


def run(args: argparse.Namespace, given: set[str]) -> int:
    if args.out and os.path.splitext(args.out)[1] not in OUTPUT_FORMATS:  # a usage error before anything is loaded
        raise VideoCoopError(f"--out {args.out}: the suffix must be one of {', '.join(OUTPUT_FORMATS)}")
    preds = predict(args.run, videos=args.videos, features=args.features, top_k=args.top_k, device=args.device,
                    num_frames=args.num_frames, fps=args.fps, batch_size=args.batch_size, num_workers=args.num_workers,
                    progress=args.progress, checkpoint=args.checkpoint)
    if args.out:
        write_predictions(preds, args.out)
        print(f"{preds.line()}; wrote {args.out}")
    else:
        sys.stdout.write(to_csv(preds))
        print(preds.line(), file=sys.stderr)
    for f in preds.failures:
        print(f"{prog()}: could not decode {f['source']}: {f['error']}", file=sys.stderr)
    return ExitCode.FAILED if preds.failures else ExitCode.OK


COMMAND = Command("predict", add_parser, run)
