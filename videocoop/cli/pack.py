"""``videocoop pack``: one split's feature folder into one memory-mapped array (:mod:`videocoop.data.packed`)."""
from __future__ import annotations

import argparse

from ..data.packed import DTYPES, pack
from .common import Command, ExitCode


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("pack", help="pack a feature folder into one memory-mapped array",
                            description="Pack one split (DIR/<class>/<video>.pt|.npy) into DST: one array plus an index.")
    parser.add_argument("src", help="the feature folder of one split")
    parser.add_argument("dst", help="the packed split to write; train with --feature-dir DST")
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="default float16")
    parser.add_argument("--overwrite", action="store_true", help="replace a packed split already in DST")
    return parser


def run(args: argparse.Namespace, given: set[str]) -> int:
    index = pack(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite)
    print(f"packed {index['videos']} videos ({index['frames']} frames, {index['dtype']}) into {args.dst}")
    return ExitCode.OK


COMMAND = Command("pack", add_parser, run)
