"""``videocoop train``: learn prompts on a feature folder; ``--eval-only`` scores a finished run."""
from __future__ import annotations

import argparse
import json

from ..train.trainer import fit
from ..utils.distributed import world_from_env
from ..utils.progress import console_handler, log_handlers
from .common import Command, ExitCode, add_train_arguments, config_from_args, require_feature_dir


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("train", help="learn prompts on a feature folder",
                            description="Learn CoOp prompts on pre-extracted frame features (defaults follow CoOp).")
    add_train_arguments(parser)
    return parser


def check(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    require_feature_dir(parser, args)


def run(args: argparse.Namespace, given: set[str]) -> int:
    cfg = config_from_args(args, given)
    main_process = world_from_env().is_main  # the other processes of a torchrun run print errors only
    with log_handlers(console_handler(cfg.progress) if main_process else None):
        summary = fit(cfg)
    if cfg.eval_only and main_process:
        print(json.dumps({k: summary[k] for k in ("top1", "top5", "loss")}))
    return ExitCode.OK


COMMAND = Command("train", add_parser, run, check)
