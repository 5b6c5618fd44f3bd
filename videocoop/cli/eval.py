"""``videocoop eval --zero-shot``: the zero-shot baseline (:mod:`videocoop.eval.zeroshot`).

A trained run is evaluated with ``videocoop train --eval-only``; ``eval`` says so when
``--zero-shot`` is missing, so the flag stays free for other evaluations.
"""
from __future__ import annotations

import argparse
import json

from ..clip.loader import PRECISIONS
from ..eval.zeroshot import ZeroShotConfig, zero_shot
from ..train.config import PROGRESS
from ..utils.config import known_fields
from ..utils.distributed import DEVICES
from ..utils.progress import console_handler, log_handlers
from .common import Command, ExitCode, add_clip_arguments, add_template_arguments


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("eval", help="the zero-shot baseline: hand-written templates, no training",
                            description="Score a feature folder with frozen CLIP and hand-written templates (several "
                                        "are ensembled in the text embedding space); prints and writes top-1, top-5, "
                                        "per-class accuracy, and base/novel/HM with --base-classes. A trained run is "
                                        "evaluated with videocoop train --eval-only --output-dir RUN.")
    d = ZeroShotConfig()
    parser.add_argument("--zero-shot", action="store_true",
                        help="score with frozen CLIP and hand-written templates, no training")
    parser.add_argument("--feature-dir", required=True, help="the features to score: DIR/<class>/<video>.pt|.npy (a validation split)")
    add_template_arguments(parser)
    parser.add_argument("--initial-prompts-file", help="a prompts file whose display_names give the class words (as training uses them)")
    parser.add_argument("--base-classes", metavar="half|FILE",
                        help="also report base, novel (each among its own classes) and their harmonic mean")
    parser.add_argument("--output-dir", default=d.output_dir, help=f"writes OUTPUT_DIR/zeroshot.json (default {d.output_dir})")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier OUTPUT_DIR/zeroshot.json")
    parser.add_argument("--num-frames", type=int, help="sample this many frames per video (default: all, padded and masked)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    add_clip_arguments(parser, d, "open_clip model name (default: from features.json)")
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision, help=f"default {d.precision}")
    parser.add_argument("--device", default=d.device, help=f"{' | '.join(DEVICES)} (default {d.device})")
    parser.add_argument("--progress", choices=PROGRESS, default="auto", help="how lines are shown (default auto)")
    return parser


def check(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    if not args.zero_shot:
        parser.error("videocoop eval scores hand-written templates: pass --zero-shot (a trained run is evaluated with "
                     "videocoop train --eval-only --output-dir RUN)")


def run(args: argparse.Namespace, given: set[str]) -> int:
    cfg = ZeroShotConfig.from_dict(known_fields(ZeroShotConfig, vars(args)))
    with log_handlers(console_handler(args.progress)):
        result = zero_shot(cfg)
    keys = ("top1", "top5", "loss", "base_top1", "novel_top1", "hm")
    print(json.dumps({k: result[k] for k in keys if k in result}))
    return ExitCode.OK


COMMAND = Command("eval", add_parser, run, check)
