"""The ``videocoop`` command: a thin layer of argparse over the library.

``videocoop train`` takes the seed report's flags; ``videocoop synth`` writes
planted-prompt synthetic features. Usage errors exit with 4 and no traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import os
import sys
import warnings
from enum import IntEnum

from ..clip.loader import UntrainedModelWarning
from ..data.packed import DTYPES as PACKED_DTYPES
from ..data.synthetic import synthesize
from ..train.config import OPTIMIZERS, PROGRESS, TrainConfig
from ..train.engine import TrainingDiverged
from ..train.trainer import fit
from ..utils.distributed import DEVICES, world_from_env
from ..utils.errors import VideoCoopError
from ..utils.progress import console_handler, log_handlers


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # training ran and failed (diverged)
    INTERRUPTED = 2  # Ctrl-C: checkpoint_last.pt holds the last finished epoch; --resume continues
    USAGE = 4  # bad flags or inputs: the message says what to change


class UsageError(Exception):
    """Raised instead of argparse's exit, so ``main`` returns an exit code."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
    data.add_argument("--val-feature-dir", default=d.val_feature_dir, help="validation features, same classes")
    data.add_argument("--initial-prompts-file", default=d.initial_prompts_file,
                      help="JSON: default_prompt, class_prompts, display_names (docs/training.md)")
    data.add_argument("--num-frames", type=int, default=d.num_frames,
                      help="sample this many frames per video (default: all, padded and masked; --eval-only: the run's)")
    data.add_argument("--num-workers", type=int, default=d.num_workers, help=f"DataLoader workers (default {d.num_workers})")

    clip = parser.add_argument_group("CLIP (default: from features.json)")
    clip.add_argument("--clip-model", default=d.clip_model, help="open_clip model name, e.g. ViT-B-32")
    clip.add_argument("--pretrained", default=d.pretrained, help="open_clip pretrained tag already in the local cache")
    clip.add_argument("--clip-checkpoint", default=d.clip_checkpoint, help="local CLIP weights file")
    clip.add_argument("--clip-seed", type=int, default=d.clip_seed, help="seed of random CLIP weights (no weights given)")
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
    run.add_argument("--eval-only", action="store_true", help="evaluate OUTPUT_DIR/checkpoint_best.pt and stop")
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
    flag whose value differs from its default counts as given.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    if not getattr(args, "config", None):
        return TrainConfig.from_dict(flags)
    base = TrainConfig.from_file(args.config)
    defaults = TrainConfig().to_dict()
    given = given if given is not None else {k for k, v in flags.items() if v != defaults[k]}
    return dataclasses.replace(base, **{k: v for k, v in flags.items() if k in given})


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    d = {k: p.default for k, p in inspect.signature(synthesize).parameters.items()}
    parser.add_argument("--out", required=True, help="writes OUT/train, OUT/val, OUT/custom_prompts.json")
    parser.add_argument("--n-classes", type=int, default=d["n_classes"], help=f"UCF101 names, spread evenly (default {d['n_classes']})")
    parser.add_argument("--clip-model", default=d["clip_model"], help=f"default {d['clip_model']} (random weights unless given)")
    parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag already in the local cache")
    parser.add_argument("--clip-checkpoint", default=None, help="local CLIP weights file")
    parser.add_argument("--clip-seed", type=int, default=d["clip_seed"], help=f"seed of random CLIP weights (default {d['clip_seed']})")
    for name in ("train_per_class", "val_per_class", "num_frames", "seed"):
        parser.add_argument(_flag(name), type=int, default=d[name], help=f"default {d[name]}")
    parser.add_argument("--max-frames", type=int, default=None, help="vary the length in [num-frames, max-frames]")
    parser.add_argument("--noise", type=float, default=d["noise"], help=f"per-frame noise norm, relative to the class signal (default {d['noise']})")
    parser.add_argument("--drift", type=float, default=d["drift"], help=f"temporal drift norm over a video (default {d['drift']})")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,4,8,16, got {text!r}") from None


def _add_template_arguments(parser: argparse.ArgumentParser) -> None:
    from ..eval.zeroshot import DEFAULT_TEMPLATES

    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES), metavar="TEMPLATE",
                        help="hand-written prompts with {} where the class name goes; several are ensembled as CLIP "
                             f"does (default: {DEFAULT_TEMPLATES[0]!r})")
    parser.add_argument("--templates-file", metavar="FILE", help="templates, one per line (wins over --templates)")


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    from ..clip.loader import PRECISIONS
    from ..eval.zeroshot import ZeroShotConfig

    d = ZeroShotConfig()
    parser.add_argument("--zero-shot", action="store_true",
                        help="score with frozen CLIP and hand-written templates, no training")
    parser.add_argument("--feature-dir", required=True, help="the features to score: DIR/<class>/<video>.pt|.npy (a validation split)")
    _add_template_arguments(parser)
    parser.add_argument("--initial-prompts-file", help="a prompts file whose display_names give the class words (as training uses them)")
    parser.add_argument("--base-classes", metavar="half|FILE",
                        help="also report base, novel (each among its own classes) and their harmonic mean")
    parser.add_argument("--output-dir", default=d.output_dir, help=f"writes OUTPUT_DIR/zeroshot.json (default {d.output_dir})")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier OUTPUT_DIR/zeroshot.json")
    parser.add_argument("--num-frames", type=int, help="sample this many frames per video (default: all, padded and masked)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    parser.add_argument("--clip-model", help="open_clip model name (default: from features.json)")
    parser.add_argument("--pretrained", help="open_clip pretrained tag already in the local cache")
    parser.add_argument("--clip-checkpoint", help="local CLIP weights file")
    parser.add_argument("--clip-seed", type=int, default=d.clip_seed, help="seed of random CLIP weights (no weights given)")
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision, help=f"default {d.precision}")
    parser.add_argument("--device", default=d.device, help=f"{' | '.join(DEVICES)} (default {d.device})")
    parser.add_argument("--progress", choices=PROGRESS, default="auto", help="how lines are shown (default auto)")


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The train flags, with --shots and --seeds taking lists and --output-dir naming ROOT."""
    add_train_arguments(parser)
    # train flags a sweep sets itself: parsed (to say so when given), not shown
    parser.add_argument("--seed", type=int, default=TrainConfig().seed, help=argparse.SUPPRESS)
    for flag in ("--resume", "--eval-only", "--overwrite"):
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    grid = parser.add_argument_group("the grid")
    grid.add_argument("--shots", type=_int_list, default=[2, 4, 8, 16], metavar="K1,K2,...",
                      help="shots per class, one setting each (default 2,4,8,16: ViFi-CLIP's and X-CLIP's)")
    grid.add_argument("--seeds", type=_int_list, default=[1, 2, 3], metavar="S1,S2,...",
                      help="one run per seed and setting (default 1,2,3: CoOp's); a run's seed is its training seed "
                           "and its split seed (the shot draw) unless --split-seed fixes the draw")
    grid.add_argument("--output-dir", default="output/sweep", metavar="ROOT",
                      help="ROOT/shots<K>_seed<S>/ per run, ROOT/zeroshot/, ROOT/results.csv|.md|.png (default output/sweep)")
    grid.add_argument("--no-zero-shot", action="store_true", help="leave out the zero-shot row")
    _add_template_arguments(grid)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="videocoop", description="CoOp prompt learning on pre-extracted video CLIP features.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="learn prompts on a feature folder",
                           description="Learn CoOp prompts on pre-extracted frame features (defaults follow CoOp).")
    add_train_arguments(train)
    synth = sub.add_parser("synth", help="write planted-prompt synthetic features",
                           description="Write synthetic features whose class text features come from a secret context.")
    _add_synth_arguments(synth)
    pack = sub.add_parser("pack", help="pack a feature folder into one memory-mapped array",
                          description="Pack one split (DIR/<class>/<video>.pt|.npy) into DST: one array plus an index.")
    pack.add_argument("src", help="the feature folder of one split")
    pack.add_argument("dst", help="the packed split to write; train with --feature-dir DST")
    pack.add_argument("--dtype", choices=PACKED_DTYPES, default="float16", help="default float16")
    pack.add_argument("--overwrite", action="store_true", help="replace a packed split already in DST")
    plot = sub.add_parser("plot", help="draw a run's curves.png and confusion.png",
                          description="Redraw OUT/curves.png (loss, top-1, lr per epoch) and OUT/confusion.png (the best "
                                      "epoch's confusion matrix and per-class top-1) from the run's own files.")
    plot.add_argument("out", help="a run folder (--output-dir of videocoop train)")
    ev = sub.add_parser("eval", help="the zero-shot baseline: hand-written templates, no training",
                        description="Score a feature folder with frozen CLIP and hand-written templates (several are "
                                    "ensembled in the text embedding space); prints and writes top-1, top-5, per-class "
                                    "accuracy, and base/novel/HM with --base-classes. A trained run is evaluated with "
                                    "videocoop train --eval-only --output-dir RUN.")
    _add_eval_arguments(ev)
    sweep = sub.add_parser("sweep", help="few-shot (or base-to-novel) runs over shots x seeds, and the results table",
                           conflict_handler="resolve",
                           description="Train one ordinary run per (shots, seed) under ROOT, skipping finished runs and "
                                       "resuming stopped ones, then write ROOT/results.csv, results.md and results.png: "
                                       "one row per setting, mean ± std over seeds and the number of runs, the zero-shot "
                                       "row first. Each run's seed is both its training seed and its split seed (the "
                                       "shot draw) unless --split-seed fixes the draw. Every train flag applies to every "
                                       "run; with --base-classes the table reports base, novel and HM.")
    _add_sweep_arguments(sweep)
    parser.subcommands = {"train": train, "synth": synth, "pack": pack, "plot": plot, "eval": ev, "sweep": sweep,
                          **_add_video_commands(sub)}
    return parser


def _run_synth(args: argparse.Namespace) -> None:
    result = synthesize(
        args.out, n_classes=args.n_classes, clip_model=args.clip_model, pretrained=args.pretrained,
        checkpoint=args.clip_checkpoint, clip_seed=args.clip_seed, train_per_class=args.train_per_class,
        val_per_class=args.val_per_class, num_frames=args.num_frames, max_frames=args.max_frames,
        noise=args.noise, drift=args.drift, seed=args.seed,
    )
    n = len(result["classnames"])
    print(f"wrote {n} classes x ({args.train_per_class} train + {args.val_per_class} val) videos to {args.out}")
    print(f"  train: {result['train']}\n  val: {result['val']}\n  prompts file: {result['prompts_file']}")
    print(f"  the secret context reaches val top1 {100 * result['oracle_val_top1']:.1f}% (the best to expect)")


def _run_eval(args: argparse.Namespace) -> None:
    from ..eval.zeroshot import ZeroShotConfig, zero_shot

    keys = {f.name for f in dataclasses.fields(ZeroShotConfig)}
    cfg = ZeroShotConfig(**{k: v for k, v in vars(args).items() if k in keys})
    with log_handlers(console_handler(args.progress)):
        result = zero_shot(cfg)
    keys = ("top1", "top5", "loss", "base_top1", "novel_top1", "hm")
    print(json.dumps({k: result[k] for k in keys if k in result}))


def _run_sweep(args: argparse.Namespace, given: set[str]) -> bool:
    """Run the sweep; True when a run diverged (the table leaves it out)."""
    from ..eval.sweep import SweepConfig, run_sweep

    train = config_from_args(argparse.Namespace(**{**vars(args), "shots": None}), given - {"shots", "output_dir"})
    cfg = SweepConfig(train=train, shots=args.shots, seeds=args.seeds, output_dir=args.output_dir,
                      zero_shot=not args.no_zero_shot, templates=args.templates, templates_file=args.templates_file)
    with log_handlers(console_handler(train.progress)):
        return bool(run_sweep(cfg).failed)


def main(argv: list[str] | None = None) -> int:
    """Run ``videocoop``; returns an :class:`ExitCode` instead of raising for user errors.

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
    print(f"{_prog()}: warning: {message}", file=sys.stderr)


def _prog() -> str:
    """The name messages start with: under torchrun it says which process speaks."""
    world = world_from_env()
    return f"videocoop (rank {world.rank})" if world.distributed else "videocoop"


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
    if args.command in ("train", "sweep") and not args.feature_dir and not args.config:
        sub.error("the following arguments are required: --feature-dir (or --config FILE naming it)")
    if args.command == "eval" and not args.zero_shot:
        sub.error("videocoop eval scores hand-written templates: pass --zero-shot (a trained run is evaluated with "
                  "videocoop train --eval-only --output-dir RUN)")
    if args.command == "sweep":
        refused = {"seed": "--seeds S1,S2,... sets each run's seed", "resume": "stopped runs are resumed by themselves",
                   "overwrite": "finished runs are kept; choose another --output-dir for a new sweep",
                   "eval_only": "a sweep trains"}
        for dest in sorted(given & set(refused)):
            sub.error(f"--{dest.replace('_', '-')} is not a sweep flag: {refused[dest]}")
    return args, given


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    command = None
    try:
        try:
            args, given = _parse(parser, argv)
        except SystemExit as e:  # --help
            return ExitCode.OK if not e.code else ExitCode.USAGE
        command = args.command
        if args.command == "synth":
            _run_synth(args)
        elif args.command == "plot":
            from ..train.plots import plot_run

            for path in plot_run(args.out):
                print(f"wrote {path}")
        elif args.command in _VIDEO_COMMANDS:
            return _VIDEO_COMMANDS[args.command](args)
        elif args.command == "pack":
            from ..data.packed import pack

            index = pack(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite)
            print(f"packed {index['videos']} videos ({index['frames']} frames, {index['dtype']}) into {args.dst}")
        elif args.command == "eval":
            _run_eval(args)
        elif args.command == "sweep":
            if _run_sweep(args, given):
                return ExitCode.FAILED
        else:
            cfg = config_from_args(args, given)
            main_process = world_from_env().is_main  # the other processes of a torchrun run print errors only
            with log_handlers(console_handler(cfg.progress) if main_process else None):
                summary = fit(cfg)
            if cfg.eval_only and main_process:
                print(json.dumps({k: summary[k] for k in ("top1", "top5", "loss")}))
    except UsageError as e:
        print(e, file=sys.stderr)
        return ExitCode.USAGE
    except VideoCoopError as e:
        print(f"{_prog()}: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        if command == "sweep":
            print(f"{_prog()}: interrupted; run the same sweep command again: finished runs are skipped, the stopped "
                  "one resumed", file=sys.stderr)
        else:
            print(f"{_prog()}: interrupted; continue a training run with the same command and --resume", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except TrainingDiverged as e:
        print(f"{_prog()}: training failed: {e}", file=sys.stderr)
        return ExitCode.FAILED
    except RuntimeError as e:
        if not _peer_failed(e):
            raise
        # the process that failed printed why; this one only lost its peer mid-collective
        print(f"{_prog()}: stopped: another process of this run failed (its message is above): "
              f"{str(e).splitlines()[0][:200]}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def _peer_failed(e: RuntimeError) -> bool:
    """A collective broken by another process's exit (gloo and NCCL say so in these words)."""
    import torch.distributed as dist

    words = ("Connection closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted")
    return world_from_env().distributed and (isinstance(e, dist.DistError) or any(w in str(e) for w in words))


# --------------------------------------------------------------------------- videos: extract, predict, synth-videos


def _add_clip_source_arguments(parser: argparse.ArgumentParser, d) -> None:
    parser.add_argument("--clip-model", default=d.clip_model, help=f"open_clip model name (default {d.clip_model})")
    parser.add_argument("--pretrained", default=d.pretrained, help="open_clip pretrained tag already in the local cache")
    parser.add_argument("--clip-checkpoint", default=d.clip_checkpoint, help="local CLIP weights file")
    parser.add_argument("--clip-seed", type=int, default=d.clip_seed, help="seed of random CLIP weights (no weights given)")


def _add_decode_arguments(parser: argparse.ArgumentParser, d, sampling_default: str) -> None:
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


def _add_video_commands(sub) -> dict[str, argparse.ArgumentParser]:
    from ..eval.predict import OUTPUT_FORMATS
    from ..video.extract import DTYPES as EXTRACT_DTYPES
    from ..video.extract import EXTRACT_PRECISIONS, ExtractConfig
    from ..video.synthetic import FORMATS, PATTERNS, synthesize_videos

    d = ExtractConfig()
    ex = sub.add_parser("extract", help="videos to CLIP frame features (the folder train reads)",
                        description="Decode videos, sample frames, apply CLIP's own preprocessing and image tower, and "
                                    "write one [T, D] feature file per video with features.json and classnames.txt. "
                                    "Under torchrun, each rank takes its share of the videos.")
    ex.add_argument("--videos", metavar="SRC", help="SRC[/<split>...]/<class>/<video>: the class is the folder holding "
                                                    "the video; folders above it are splits, kept under DST")
    ex.add_argument("--out", metavar="DST", required=True, help="the feature folder(s) to write")
    ex.add_argument("--manifest", metavar="CSV", help="path,label rows instead of class folders (paths relative to "
                                                      "SRC, else to the CSV's folder)")
    _add_clip_source_arguments(ex, d)
    _add_decode_arguments(ex, d, f"default {d.num_frames}")
    ex.add_argument("--precision", choices=EXTRACT_PRECISIONS, default=d.precision,
                    help="the image tower's precision; auto: fp16 on CUDA, fp32 elsewhere")
    ex.add_argument("--dtype", choices=EXTRACT_DTYPES, default=d.dtype, help=f"storage (default {d.dtype})")
    ex.add_argument("--packed", action="store_true", help="also pack each split into DST/<split> (per-file features "
                                                          "under DST/per-file)")
    ex.add_argument("--overwrite", action="store_true", help="redo videos already done; replace a run with other settings")

    pr = sub.add_parser("predict", help="a trained run's top-k classes for videos or feature files",
                        description="Apply a trained run to a folder of videos (extracted on the fly with the run's CLIP "
                                    "and sampling) or of feature files; one row per video. Labels are not needed.")
    pr.add_argument("--run", required=True, metavar="OUT", help="the --output-dir of a videocoop train run")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", metavar="SRC", help="video files, in any folder layout")
    src.add_argument("--features", metavar="DIR", help="feature files (a feature folder, flat folder or packed split)")
    pr.add_argument("--top-k", type=int, default=5, help="classes per video (default 5)")
    pr.add_argument("--out", metavar="FILE", help=f"{' or '.join(OUTPUT_FORMATS)} (default: CSV on stdout)")
    _add_decode_arguments(pr, d, "default: as the run's training features")

    sv = sub.add_parser("synth-videos", help="write small synthetic video files of a few classes",
                        description="Write OUT/{train,val}/<class>/*.mp4: each class a distinct colour and motion over "
                                    "noise, encoded with PyAV; a start for extract, train and predict without data.")
    defaults = {k: p.default for k, p in inspect.signature(synthesize_videos).parameters.items()}
    sv.add_argument("--out", required=True, help="the root of the video tree")
    sv.add_argument("--n-classes", type=int, default=defaults["n_classes"],
                    help=f"1..{len(PATTERNS)} (default {defaults['n_classes']})")
    for name in ("train_per_class", "val_per_class", "frames", "width", "height", "fps", "seed"):
        sv.add_argument(_flag(name), type=int, default=defaults[name], help=f"default {defaults[name]}")
    sv.add_argument("--format", choices=sorted(FORMATS), default=defaults["suffix"], help=f"default {defaults['suffix']}")
    return {"extract": ex, "predict": pr, "synth-videos": sv}


def _run_extract(args: argparse.Namespace) -> int:
    from ..video.extract import ExtractConfig, extract

    names = {f.name for f in dataclasses.fields(ExtractConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if values.get("num_frames") is None and values.get("fps") is None:
        values.pop("num_frames")  # the default
    else:
        values["num_frames"] = values.get("num_frames") if values.get("fps") is None else None
    try:
        summary = extract(ExtractConfig.from_dict(values))
    except KeyboardInterrupt:
        print("videocoop: interrupted; the videos written so far are kept: rerun the same command to continue",
              file=sys.stderr)
        return ExitCode.INTERRUPTED
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.line())
    return ExitCode.FAILED if summary.failed else ExitCode.OK


def _run_predict(args: argparse.Namespace) -> int:
    from ..eval.predict import predict, to_csv, write_predictions

    if args.out:  # a bad suffix is a usage error before anything is loaded
        from ..eval.predict import OUTPUT_FORMATS

        if os.path.splitext(args.out)[1] not in OUTPUT_FORMATS:
            raise VideoCoopError(f"--out {args.out}: the suffix must be one of {', '.join(OUTPUT_FORMATS)}")
    preds = predict(args.run, videos=args.videos, features=args.features, top_k=args.top_k, device=args.device,
                    num_frames=args.num_frames, fps=args.fps, batch_size=args.batch_size, num_workers=args.num_workers,
                    progress=args.progress)
    if args.out:
        write_predictions(preds, args.out)
        print(f"{preds.line()}; wrote {args.out}")
    else:
        sys.stdout.write(to_csv(preds))
        print(preds.line(), file=sys.stderr)
    for f in preds.failures:
        print(f"videocoop: could not decode {f['source']}: {f['error']}", file=sys.stderr)
    return ExitCode.FAILED if preds.failures else ExitCode.OK


def _run_synth_videos(args: argparse.Namespace) -> int:
    from ..video.synthetic import synthesize_videos

    result = synthesize_videos(args.out, n_classes=args.n_classes, train_per_class=args.train_per_class,
                               val_per_class=args.val_per_class, frames=args.frames, width=args.width,
                               height=args.height, fps=args.fps, suffix=args.format, seed=args.seed)
    print(f"wrote {result['videos']} videos of {len(result['classnames'])} classes ({', '.join(result['classnames'])}) "
          f"to {args.out}: train/ and val/")
    return ExitCode.OK


_VIDEO_COMMANDS = {"extract": _run_extract, "predict": _run_predict, "synth-videos": _run_synth_videos}
