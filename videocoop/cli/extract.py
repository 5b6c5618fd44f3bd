"""``videocoop extract``: videos to CLIP frame features, the folder ``train`` reads
(:mod:`videocoop.video.extract`)."""
from __future__ import annotations

import argparse
import sys

from ..utils.config import known_fields
from ..utils.distributed import world_from_env
from ..video.extract import DTYPES, EXTRACT_PRECISIONS, ExtractConfig, extract
from .common import Command, ExitCode, add_clip_arguments, add_decode_arguments, prog


def add_parser(sub) -> argparse.ArgumentParser:
    d = ExtractConfig()
    parser = sub.add_parser("extract", help="videos to CLIP frame features (the folder train reads)",
                            description="Decode videos, sample frames, apply CLIP's own preprocessing and image tower, "
                                        "and write one [T, D] feature file per video with features.json and "
                                        "classnames.txt. Under torchrun, each rank takes its share of the videos.")
    parser.add_argument("--videos", metavar="SRC", help="SRC[/<split>...]/<class>/<video>: the class is the folder "
                                                        "holding the video; folders above it are splits, kept under DST")
    parser.add_argument("--out", metavar="DST", required=True, help="the feature folder(s) to write")
    parser.add_argument("--manifest", metavar="CSV", help="path,label rows instead of class folders (paths relative "
                                                          "to SRC, else to the CSV's folder)")
    add_clip_arguments(parser, d, f"open_clip model name (default {d.clip_model})")
    add_decode_arguments(parser, d, f"default {d.num_frames}")
    parser.add_argument("--precision", choices=EXTRACT_PRECISIONS, default=d.precision,
                        help="the image tower's precision; auto: fp16 on CUDA, fp32 elsewhere")
    parser.add_argument("--dtype", choices=DTYPES, default=d.dtype, help=f"storage (default {d.dtype})")
    parser.add_argument("--packed", action="store_true", help="also pack each split into DST/<split> (per-file "
                                                              "features under DST/per-file)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo videos already done; replace a run with other settings")
    return parser


def run(args: argparse.Namespace, given: set[str]) -> int:
    values = known_fields(ExtractConfig, vars(args))
    if values["num_frames"] is None and values["fps"] is None:  # argparse keeps the two exclusive
        values.pop("num_frames")  # neither given: ExtractConfig's default
    try:
        summary = extract(ExtractConfig.from_dict(values))
    except KeyboardInterrupt:
        print(f"{prog()}: interrupted; the videos written so far are kept: rerun the same command to continue",
              file=sys.stderr)
        return ExitCode.INTERRUPTED
    if world_from_env().is_main:
        print(summary.line())
    return ExitCode.FAILED if summary.failed else ExitCode.OK


COMMAND = Command("extract", add_parser, run)
