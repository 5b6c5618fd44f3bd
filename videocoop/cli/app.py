"""The ``videocoop`` command: the subcommands' parsers in one, and ``main``, which runs one
and turns what goes wrong into an exit code and a message without a traceback.

Each subcommand is a module of this package that declares a :class:`~.common.Command`
(its parser, its run, and any check argparse cannot do alone); :data:`COMMANDS` lists them
in the order ``videocoop --help`` shows.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import warnings

from ..clip.loader import UntrainedModelWarning
from ..train.engine import TrainingDiverged
from ..utils.distributed import world_from_env
from ..utils.errors import VideoCoopError
from . import eval as eval_command  # not bound as `eval`: that is Python's builtin
from . import extract, pack, plot, predict, sweep, synth, synth_videos, train
from .common import CliParser, ExitCode, UsageError, given_dests, print_user_error, prog

COMMANDS = {c.name: c for c in (train.COMMAND, synth.COMMAND, pack.COMMAND, plot.COMMAND, eval_command.COMMAND,
                                 sweep.COMMAND, extract.COMMAND, predict.COMMAND, synth_videos.COMMAND)}


def build_parser() -> argparse.ArgumentParser:
    """The ``videocoop`` parser; ``parser.subcommands`` maps each command to its own parser."""
    parser = CliParser(prog="videocoop", description="CoOp prompt learning on pre-extracted video CLIP features.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser)
    parser.subcommands = {name: command.add_parser(sub) for name, command in COMMANDS.items()}
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``videocoop``; returns an :class:`ExitCode` instead of raising for user errors
    (2, printed as one paragraph; the traceback too with ``VIDEOCOOP_TRACEBACK=1``).

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
    """
    parser = build_parser()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(parser, argv)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # a user reads the message, not our source line, and the flags, not Python's argument names
    if isinstance(message, UntrainedModelWarning):
        message = message.text("--pretrained TAG or --clip-checkpoint FILE")
    print(f"{prog()}: warning: {message}", file=sys.stderr)


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """Parse; an unknown flag is reported with its subcommand's usage and the closest flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    sub = parser.subcommands[args.command]
    if extras:
        options = [o for a in sub._actions for o in a.option_strings]
        hints = [f"{x}: did you mean {', '.join(m)}?" for x in extras
                 if (m := difflib.get_close_matches(x.split("=", 1)[0], options, n=2, cutoff=0.7))]
        sub.error(f"unrecognized arguments: {' '.join(extras)}" + ("; " + "; ".join(hints) if hints else ""))
    given = given_dests(sub, argv[argv.index(args.command) + 1:])
    check = COMMANDS[args.command].check
    if check is not None:
        check(sub, args, given)
    return args, given


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    try:
        try:
            args, given = _parse(parser, argv)
        except SystemExit as e:  # --help
            return ExitCode.OK if not e.code else ExitCode.USAGE
        return COMMANDS[args.command].run(args, given)
    except UsageError as e:
        print_user_error(str(e))
        return ExitCode.USAGE
    except VideoCoopError as e:  # a bad input file too (InputError): the file, where, what to change
        print_user_error(f"{prog()}: error: {e}")
        return ExitCode.USAGE
    except KeyboardInterrupt:  # extract and sweep say how they continue themselves
        print(f"{prog()}: interrupted; continue a training run with the same command and --resume", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except TrainingDiverged as e:
        print(f"{prog()}: training failed: {e}", file=sys.stderr)
        return ExitCode.FAILED
    except RuntimeError as e:
        if not _peer_failed(e):
            raise
        # the process that failed printed why; this one only lost its peer mid-collective
        print(f"{prog()}: stopped: another process of this run failed (its message is above): "
              f"{str(e).splitlines()[0][:200]}", file=sys.stderr)
        return ExitCode.FAILED


def _peer_failed(e: RuntimeError) -> bool:
    """A collective broken by another process's exit (gloo and NCCL say so in these words)."""
    import torch.distributed as dist

    words = ("Connection closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted")
    return world_from_env().distributed and (isinstance(e, dist.DistError) or any(w in str(e) for w in words))
