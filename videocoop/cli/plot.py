"""``videocoop plot``: redraw a run's pictures from its own files (:mod:`videocoop.train.plots`)."""
from __future__ import annotations

import argparse

from ..train.plots import plot_run
from .common import Command, ExitCode


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("plot", help="draw a run's curves.png and confusion.png",
                            description="Redraw OUT/curves.png (loss, top-1, lr per epoch) and OUT/confusion.png (the "
                                        "last epoch's confusion matrix and per-class top-1) from the run's own files.")
    parser.add_argument("out", help="a run folder (--output-dir of videocoop train)")
    return parser


def run(args: argparse.Namespace, given: set[str]) -> int:
    for path in plot_run(args.out):
        print(f"wrote {path}")
    return ExitCode.OK


COMMAND = Command("plot", add_parser, run)
