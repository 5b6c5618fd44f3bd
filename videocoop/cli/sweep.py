"""``videocoop sweep``: few-shot (or base-to-novel) runs over shots x seeds and the results
table (:mod:`videocoop.eval.sweep`)."""
from __future__ import annotations

import argparse
import sys

from ..eval.sweep import SweepConfig, run_sweep
from ..train.config import TrainConfig
from ..utils.config import known_fields
from ..utils.progress import console_handler, log_handlers
from .common import (
    Command,
    ExitCode,
    add_template_arguments,
    add_train_arguments,
    config_from_args,
    prog,
    require_feature_dir,
)

# train flags a sweep sets itself, and why; given on the command line they are refused
REFUSED = {"seed": "--seeds S1,S2,... sets each run's seed", "resume": "stopped runs are resumed by themselves",
           "overwrite": "finished runs are kept; choose another --output-dir for a new sweep",
           "eval_only": "a sweep trains", "checkpoint": "a sweep's table reports each run's last epoch"}


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,4,8,16, got {text!r}") from None


def add_parser(sub) -> argparse.ArgumentParser:
    """The train flags, with --shots and --seeds taking lists and --output-dir naming ROOT."""
    parser = sub.add_parser("sweep", help="few-shot (or base-to-novel) runs over shots x seeds, and the results table",
                            conflict_handler="resolve",
                            description="Train one ordinary run per (shots, seed) under ROOT, skipping finished runs "
                                        "and resuming stopped ones, then write ROOT/results.csv, results.md and "
                                        "results.png: one row per setting, mean ± std over seeds and the number of "
                                        "runs, the zero-shot row first. Each run's seed is both its training seed and "
                                        "its split seed (the shot draw) unless --split-seed fixes the draw. Every "
                                        "train flag applies to every run; with --base-classes the table reports base, "
                                        "novel and HM.")
    add_train_arguments(parser)
    # train flags a sweep sets itself: parsed (to say so when given), not shown
    parser.add_argument("--seed", type=int, default=TrainConfig().seed, help=argparse.SUPPRESS)
    for flag in ("--resume", "--eval-only", "--overwrite"):
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=TrainConfig().checkpoint, help=argparse.SUPPRESS)
    grid = parser.add_argument_group("the grid")
    grid.add_argument("--shots", type=_int_list, default=[2, 4, 8, 16], metavar="K1,K2,...",
                      help="shots per class, one setting each (default 2,4,8,16: ViFi-CLIP's and X-CLIP's)")
    grid.add_argument("--seeds", type=_int_list, default=[1, 2, 3], metavar="S1,S2,...",
                      help="one run per seed and setting (default 1,2,3: CoOp's); a run's seed is its training seed "
                           "and its split seed (the shot draw) unless --split-seed fixes the draw")
    grid.add_argument("--output-dir", default="output/sweep", metavar="ROOT",
                      help="ROOT/shots<K>_seed<S>/ per run, ROOT/zeroshot/, ROOT/results.csv|.md|.png (default output/sweep)")
    grid.add_argument("--no-zero-shot", action="store_true", help="leave out the zero-shot row")
    add_template_arguments(grid)
    return parser


def check(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    require_feature_dir(parser, args)
    for dest in sorted(given & set(REFUSED)):
        parser.error(f"--{dest.replace('_', '-')} is not a sweep flag: {REFUSED[dest]}")


def run(args: argparse.Namespace, given: set[str]) -> int:
    """Run the sweep; FAILED when a run diverged (the table leaves it out)."""
    # --shots and --output-dir are the grid's here, not one run's
    train = config_from_args(argparse.Namespace(**{**vars(args), "shots": None}), given - {"shots", "output_dir"})
    cfg = SweepConfig.from_dict({**known_fields(SweepConfig, vars(args)), "train": train,
                                 "zero_shot": not args.no_zero_shot})
    try:
        with log_handlers(console_handler(train.progress)):
            failed = run_sweep(cfg).failed
    except KeyboardInterrupt:
        print(f"{prog()}: interrupted; run the same sweep command again: finished runs are skipped, the stopped "
              "one resumed", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.FAILED if failed else ExitCode.OK


COMMAND = Command("sweep", add_parser, run, check)
