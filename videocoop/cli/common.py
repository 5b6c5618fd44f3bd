"""What every subcommand shares: the exit codes, the usage error and the parser that raises
it, the name messages start with, and the flags more than one command takes (every
``videocoop train`` flag, also read by ``sweep`` and ``python -m checks``; CLIP's; the
zero-shot templates; video decoding)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ..train.config import CHECKPOINTS, OPTIMIZERS, PROGRESS, TrainConfig
from ..utils.config import known_fields
from ..utils.distributed import DEVICES, world_from_env
from ..utils.errors import ConfigError, InputError


class ExitCode(IntEnum):
    """The exit codes of ``videocoop`` and ``python -m checks`` (docs/inputs.md).

    2 for anything the user must change (a flag or an input file), as argparse itself exits
    on a bad flag; 130 for Ctrl-C, as a shell reports a command stopped by SIGINT (128 + 2).
    """

    OK = 0
    FAILED = 1  # training ran and failed (diverged); audits FAILed; a video could not be decoded
    USAGE = 2  # bad flags or inputs: one paragraph says which file, key or line, and what to change
    INTERRUPTED = 130  # Ctrl-C: checkpoint_last.pt holds the last finished epoch; --resume continues


#: Set to 1 to see the traceback of a user error too (a bug report's detail), after its message.
TRACEBACK_ENV = "VIDEOCOOP_TRACEBACK"


def print_user_error(message: str) -> None:
    """A user error's message on stderr: one paragraph, and its traceback only when
    :data:`TRACEBACK_ENV` asks for it (called inside the ``except`` that caught the error)."""
    print(message, file=sys.stderr)
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exc()


class UsageError(Exception):
    """Raised instead of argparse's exit, so ``main`` returns an exit code."""


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` (usage line and message)
    instead of exiting, so the caller prints them without a traceback and returns 2."""

    def error(self, message):
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")


@dataclass(frozen=True)
class Command:
    """One subcommand, as its module declares it (``COMMAND``); ``app.COMMANDS`` lists them."""

    name: str  # what follows ``videocoop``
    add_parser: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]  # adds its subparser, returns it
    run: Callable[[argparse.Namespace, set[str]], int]  # (args, the flags really given) -> ExitCode
    # what argparse cannot check alone: (its parser, args, the flags given); errors through parser.error
    check: Callable[[argparse.ArgumentParser, argparse.Namespace, set[str]], None] | None = None


def flag(name: str) -> str:
    """The flag of a Python argument name: ``train_per_class`` -> ``--train-per-class``."""
    return "--" + name.replace("_", "-")


def prog() -> str:
    """The name messages start with: under torchrun it says which process speaks."""
    world = world_from_env()
    return f"videocoop (rank {world.rank})" if world.distributed else "videocoop"


def add_train_arguments(parser: argparse.ArgumentParser, require_data: bool = True) -> None:
    """Add every ``videocoop train`` flag to ``parser``; defaults come from :class:`TrainConfig`.

    Args:
        parser: the parser (or subparser) to extend.
        require_data: make ``--feature-dir`` required (``python -m checks`` passes False).
    """
    from ..clip.loader import PRECISIONS
    from ..model.prompt_learner import POSITIONS
    from ..model.text_encoder import POOLS
    from ..model.video_clip import TEMPORAL_AGGS

    d = TrainConfig()
    parser.add_argument("--config", metavar="FILE",
                        help="start from a config file (a run's OUTPUT_DIR/config.json reruns that run); "
                             "flags given beside it override its values")
    data = parser.add_argument_group("data")
    data.add_argument("--feature-dir", default=d.feature_dir,
                      help="training features: DIR/<class>/<video>.pt|.npy (+ features.json)"
                           + (" (required, unless --config names it)" if require_data else ""))
    data.add_argument("--val-feature-dir", default=d.val_feature_dir,
                      help="held-out features the run is judged on (the test split), same classes; reported every "
                           "epoch, never chosen on")
    data.add_argument("--select-feature-dir", default=d.select_feature_dir, metavar="DIR",
                      help="a validation split of its own (not the test split) to choose the best epoch on: "
                           "checkpoint_best.pt (default: none; the model is the last epoch's)")
    data.add_argument("--initial-prompts-file", default=d.initial_prompts_file,
                      help="JSON: default_prompt, class_prompts, display_names (docs/training.md)")
    data.add_argument("--num-frames", type=int, default=d.num_frames,
                      help="sample this many frames per video (default: all, padded and masked; --eval-only: the run's)")
    data.add_argument("--num-workers", type=int, default=d.num_workers, help=f"DataLoader workers (default {d.num_workers})")

    clip = parser.add_argument_group("CLIP (default: from features.json)")
    add_clip_arguments(clip, d, "open_clip model name, e.g. ViT-B-32")
    clip.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                      help="default fp32 (--eval-only: the run's)")

    model = parser.add_argument_group("prompts and model")
    model.add_argument("--n-ctx", type=int, default=d.n_ctx, help=f"context vectors (default {d.n_ctx}, CoOp)")
    model.add_argument("--csc", action="store_true", help="class-specific context")
    model.add_argument("--class-token-position", choices=POSITIONS, default=d.class_token_position)
    model.add_argument("--temporal-agg", choices=TEMPORAL_AGGS, default=d.temporal_agg)
    model.add_argument("--text-pool", choices=POOLS, default=d.text_pool,
                       help="eot: CLIP's pooling (default); mean: the seed report's")

    opt = parser.add_argument_group("optimisation (defaults follow CoOp)")
    opt.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    opt.add_argument("--batch-size", type=int, default=d.batch_size,
                     help=f"the global batch: under torchrun split over the processes (default {d.batch_size})")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"default {d.optimizer}")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    opt.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default {d.momentum})")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay}")
    opt.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs, help=f"default {d.warmup_epochs}")
    opt.add_argument("--warmup-lr", type=float, default=d.warmup_lr, help=f"constant warm-up lr (default {d.warmup_lr})")
    opt.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")

    proto = parser.add_argument_group("protocols (docs/protocols.md)")
    proto.add_argument("--shots", type=int, default=d.shots, metavar="K",
                       help="few-shot: train on K videos per class, drawn by --split-seed (OUTPUT_DIR/shots.json)")
    proto.add_argument("--split-seed", type=int, default=d.split_seed, metavar="S",
                       help="seed of the shot draw (default: --seed, as CoOp); the same draw on every machine")
    proto.add_argument("--base-classes", default=d.base_classes, metavar="half|FILE",
                       help="base-to-novel: train on the base classes only, report base, novel and their harmonic "
                            "mean; half: CoCoOp's split (the first ceil(n/2) classes in label order); FILE: base "
                            "class names, one per line")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default=d.output_dir, help=f"default {d.output_dir}")
    run.add_argument("--device", default=d.device, help=f"{' | '.join(DEVICES)} (default {d.device})")
    run.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its checkpoint_last.pt")
    run.add_argument("--eval-only", action="store_true",
                     help="evaluate the run in OUTPUT_DIR (its last epoch; see --checkpoint) and stop")
    run.add_argument("--checkpoint", choices=CHECKPOINTS, default=d.checkpoint,
                     help="with --eval-only: last (default: the model after the last epoch) or best (the epoch "
                          "chosen on the run's --select-feature-dir)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run in OUTPUT_DIR (deleted once the new run is built and checked)")
    run.add_argument("--progress", choices=PROGRESS, default=d.progress,
                     help="rich bars on a terminal, plain lines otherwise (default auto)")
    run.add_argument("--check-every", type=int, default=d.check_every,
                     help=f"steps between checks for a NaN/inf loss (one host sync each; default {d.check_every})")
    run.add_argument("--shard-text", action=argparse.BooleanOptionalAction, default=d.shard_text,
                     help="under torchrun: each process encodes only its share of the classes' text (default: on "
                          "with more than one process)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard event files to OUTPUT_DIR/tensorboard (pip install 'videocoop[tensorboard]')")


def require_feature_dir(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The check ``add_train_arguments`` cannot leave to argparse: ``--config`` may name the folder."""
    if not args.feature_dir and not args.config:
        parser.error("the following arguments are required: --feature-dir (or --config FILE naming it)")


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the flags ``argv`` really gives (not those left at their defaults)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv)
    finally:
        for a, default in saved:
            a.default = default
    return set(vars(given))


def config_from_args(args: argparse.Namespace, given: set[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of parsed train flags (other attributes are ignored).

    With ``--config FILE`` the file's values come first and the flags given on the command
    line override them: ``given`` names those (:func:`given_dests`); without it, every
    flag whose value differs from its default counts as given. The result is checked then,
    so a bad value of the file is an InputError naming the file and the key.
    """
    flags = known_fields(TrainConfig, vars(args))
    if not getattr(args, "config", None):
        return TrainConfig.from_dict(flags)
    base = TrainConfig.from_file(args.config)
    defaults = TrainConfig().to_dict()
    given = given if given is not None else {k for k, v in flags.items() if v != defaults[k]}
    cfg = dataclasses.replace(base, **{k: v for k, v in flags.items() if k in given})
    try:  # a value no flag gives is the file's to give: said with its name and key (fit checks again)
        cfg.check()
    except ConfigError as e:
        if e.key in given:
            raise
        raise InputError(args.config, str(e), at=f'key "{e.key}"') from e
    return cfg


def add_clip_arguments(parser, d, model_help: str,
                       seed_help: str = "seed of random CLIP weights (no weights given)") -> None:
    """The CLIP flags (``train``, ``eval``, ``extract``, ``synth``); ``d`` holds the defaults
    (``clip_model``, ``pretrained``, ``clip_checkpoint``, ``clip_seed``)."""
    parser.add_argument("--clip-model", default=d.clip_model, help=model_help)
    parser.add_argument("--pretrained", default=d.pretrained, help="open_clip pretrained tag already in the local cache")
    parser.add_argument("--clip-checkpoint", default=d.clip_checkpoint, help="local CLIP weights file")
    parser.add_argument("--clip-seed", type=int, default=d.clip_seed, help=seed_help)


def add_template_arguments(parser: argparse.ArgumentParser) -> None:
    """The zero-shot templates (``eval --zero-shot`` and a sweep's zero-shot row)."""
    from ..eval.zeroshot import DEFAULT_TEMPLATES

    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES), metavar="TEMPLATE",
                        help="hand-written prompts with {} where the class name goes; several are ensembled as CLIP "
                             f"does (default: {DEFAULT_TEMPLATES[0]!r})")
    parser.add_argument("--templates-file", metavar="FILE", help="templates, one per line (wins over --templates)")


def add_decode_arguments(parser: argparse.ArgumentParser, d, sampling_default: str) -> None:
    """Frame sampling, device and decoding flags (``extract`` and ``predict``); ``d`` holds the defaults."""
    from ..video.extract import PROGRESS as EXTRACT_PROGRESS

    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--num-frames", type=int, default=None,
                          help=f"the middle frame of N equal segments (the loader's evaluation sampling; {sampling_default})")
    sampling.add_argument("--fps", type=float, default=None, help="every frame at F frames per second instead (variable T)")
    parser.add_argument("--device", default=d.device, help=f"auto (CUDA when present) | cpu | cuda | cuda:N (default {d.device})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"frames per image-tower forward (default {d.batch_size})")
    parser.add_argument("--num-workers", type=int, default=d.num_workers,
                        help="decoding processes (default min(4, CPUs - 1); 0: decode in the main process)")
    parser.add_argument("--progress", choices=EXTRACT_PROGRESS, default=d.progress,
                        help="a rich bar on a terminal, plain lines otherwise (default auto)")


__all__ = ["TRACEBACK_ENV", "CliParser", "Command", "ExitCode", "UsageError", "add_clip_arguments",
           "add_decode_arguments", "add_template_arguments", "add_train_arguments", "config_from_args", "flag",
           "given_dests", "print_user_error", "prog", "require_feature_dir"]
