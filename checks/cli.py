"""``python -m checks``: build the target, run the audits, write the reports, exit 0 / 1 / 2."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from videocoop import VideoCoopError, train
from videocoop.cli import CliParser, ExitCode, UsageError, add_train_arguments, config_from_args, print_user_error
from videocoop.clip import UntrainedModelWarning, weights_id_of
from videocoop.data import UCF101, collate_samples, synthesize
from videocoop.utils import read_lines
from videocoop.utils.files import write_text

from .audits.determinism import environment_line
from .classes import rebuilt_for_classes
from .core import AuditTarget, get_audit, list_audits, resolve_device
from .distributed import videocoop_step
from .locations import locate, relpath
from .report import RunInfo, print_summary, to_json, to_junit, to_markdown, to_step_summary
from .report.heatmap import write_heatmap_png
from .runner import exit_code, run_audits

DEFAULT_REPORT = "reports/verification.md"
#: The embedded default: random-weight ViT-B-32, UCF101 names, a few synthetic videos per class.
DEFAULT_CLIP = "ViT-B-32"
DEFAULT_VIDEOS_PER_CLASS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="python -m checks",
        description="Audit a CoOp-style video model before training: each audit runs the model and measures "
                    "one known failure mode. Without --target it audits exactly what `videocoop train` with "
                    "the same flags would train; with no flags, a random-weight ViT-B-32 on UCF101 names and "
                    "synthetic features.",
    )
    out = parser.add_argument_group("audits and reports")
    out.add_argument("--target", metavar="PKG.MODULE:FUNCTION",
                     help="audit your own model: FUNCTION() returns a checks.AuditTarget or a bare model")
    out.add_argument("--only", metavar="IDS", help="comma-separated audit ids (default: all; see --list)")
    out.add_argument("--list", action="store_true", help="list the audit ids and exit")
    out.add_argument("--report", default=DEFAULT_REPORT, help=f"markdown report (default {DEFAULT_REPORT})")
    out.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    out.add_argument("--junit", metavar="PATH", help="also write JUnit XML (FAIL=failure, ERROR=error, SKIP=skipped)")
    out.add_argument("--lang", choices=("en", "ko"), default="en", help="report language (default en)")
    out.add_argument("--classnames", metavar="FILE|A,B,...",
                     help="class names in label order for a --target that returns a bare model without them: a file "
                          "with one name per line (a feature folder's classnames.txt) or a comma-separated list")
    out.add_argument("--spawn", action="store_true",
                     help="also run the audits that start processes (distributed-equivalence: 3 gloo processes on the "
                          "CPU, seconds); CI files pass it")
    out.add_argument("--selftest", action="store_true",
                     help="run every audit on its clean case and on its planted fault on this machine (the device "
                          "audits on CUDA when present; --device cuda demands it) and print audit -> caught / missed; "
                          "exit 1 if a planted fault passes or a clean case does not")
    add_train_arguments(parser, require_data=False)
    return parser


def limit_threads() -> str:
    """Fewer torch threads than cores when other jobs keep the cores busy: OpenMP threads spin while
    they wait, and on a shared 2-core machine two threads ran the audits several times slower than
    one. An explicit OMP_NUM_THREADS is left alone. Returns a line saying what was chosen."""
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return f"torch threads: {torch.get_num_threads()}"
    cores, load = os.cpu_count() or 1, os.getloadavg()[0]
    threads = max(1, min(torch.get_num_threads(), round(cores - load)))
    if threads < torch.get_num_threads():
        torch.set_num_threads(threads)
    return f"torch threads: {torch.get_num_threads()} (load {load:.1f} on {cores} cores; OMP_NUM_THREADS overrides)"


def read_classnames(value: str) -> list[str]:
    """``--classnames``: a file with one name per line, or a comma-separated list."""
    if os.path.isfile(value):
        names = read_lines(value, comments=False)
    else:
        names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise VideoCoopError(f"--classnames {value!r} names no class (a file with one name per line, or A,B,C)")
    return names


def load_target(spec: str, classnames: list[str] | None = None) -> AuditTarget:
    """Import ``pkg.module:function`` and call it; a usage error names what went wrong.

    ``classnames`` (``--classnames``): the class names of a bare model that carries none.
    """
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise VideoCoopError(f"--target must look like pkg.module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):  # one it imports
            raise VideoCoopError(f"--target {spec}: importing {module_name} raised {_raised(e, module_name)}") from e
        raise VideoCoopError(f"--target {spec}: cannot import {module_name!r} ({e}); run from the folder that holds "
                             f"it, or install it") from e
    except (Exception, SystemExit) as e:  # noqa: BLE001: the user's module failed: one line, where, no traceback
        raise VideoCoopError(f"--target {spec}: importing {module_name} raised {_raised(e, module_name)}") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        where = f" ({relpath(module.__file__)})" if getattr(module, "__file__", None) else ""
        raise VideoCoopError(f"--target {spec}: {module_name}{where} has no function {func_name!r}; it has: "
                             f"{', '.join(names) or 'none'}")
    try:
        built = func()
    except (Exception, SystemExit) as e:  # noqa: BLE001: the user's factory failed: one line, where, no traceback
        raise VideoCoopError(f"--target {spec}: {func_name}() raised {_raised(e)}") from e
    if classnames is not None and isinstance(built, AuditTarget):
        raise VideoCoopError(f"--classnames is for a --target that returns a bare model; {func_name}() returned an "
                             f"AuditTarget, whose classnames are used")
    target = AuditTarget.coerce(built, classnames)
    if target.rebuild is None:  # calling the factory again gives a fresh model (checkpoint-roundtrip)
        target.rebuild = lambda: AuditTarget.coerce(func(), classnames).model
    if not target.description:
        target.description = f"{type(target.model).__name__} from --target {spec}"
    return target


def _raised(e: BaseException, module: str | None = None) -> str:
    """An exception of the user's code in one line: its type, its first line, and where in their
    files it was raised (the last frame outside Python's and the installed packages' own files;
    a SyntaxError's own file and line; else the file of the ``module`` being imported)."""
    text = (str(e).splitlines() or [""])[0]
    if isinstance(e, SyntaxError) and e.filename and not e.filename.startswith("<"):
        return f"{type(e).__name__}: {e.msg} (at {relpath(e.filename)}:{e.lineno})"
    frames = traceback.extract_tb(e.__traceback__)
    library = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__)})
    own = [f for f in frames if not f.filename.startswith((*library, "<")) and
           os.path.dirname(f.filename) != os.path.dirname(__file__)]
    if own:
        return f"{type(e).__name__}: {text} (at {relpath(own[-1].filename)}:{own[-1].lineno})"
    try:
        spec = importlib.util.find_spec(module) if module else None  # found: its import ran it
    except (Exception, SystemExit):  # noqa: BLE001: its package's import fails too; said without a file
        spec = None
    return f"{type(e).__name__}: {text}" + (f" (in {relpath(spec.origin)})" if spec and spec.origin else "")


def _given_train_flags(argv: list[str]) -> list[str]:
    """The argv part that belongs to ``videocoop train`` (everything but this tool's own flags)."""
    own = {"--target", "--only", "--report", "--json", "--junit", "--lang", "--classnames"}
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in own:
            skip = "=" not in a
            continue
        if name not in ("--list", "--selftest", "--spawn"):
            kept.append(a)
    return kept


def build_own_target(args: argparse.Namespace, train_flags: list[str], workdir: str) -> AuditTarget:
    """Our own model and data from `videocoop train` flags; the embedded default without flags."""
    if not args.feature_dir:
        synthesize(workdir, classnames=UCF101, clip_model=args.clip_model or DEFAULT_CLIP, pretrained=args.pretrained,
                   checkpoint=args.clip_checkpoint, clip_seed=args.clip_seed,
                   train_per_class=DEFAULT_VIDEOS_PER_CLASS, val_per_class=1)
        args.feature_dir, args.val_feature_dir = f"{workdir}/train", f"{workdir}/val"
        synth = ["videocoop", "synth", "--out", "data/synth", "--n-classes", str(len(UCF101)),
                 "--train-per-class", str(DEFAULT_VIDEOS_PER_CLASS), "--val-per-class", "1"]
        train_flags = ["--feature-dir", "data/synth/train", "--val-feature-dir", "data/synth/val", *train_flags]
        command = shlex.join(synth) + " && \\\n" + shlex.join(["videocoop", "train", *train_flags])
    else:
        command = shlex.join(["videocoop", "train", *train_flags])
    cfg = config_from_args(args)
    cfg.device = "cpu"  # the audits run on the CPU; device audits move copies themselves
    built = train.build(cfg)
    cfg = built.cfg
    weights = weights_id_of(cfg)
    # the checkpoint --resume (the last) or --eval-only (--checkpoint: the last by default) will load
    checkpoint, model = None, ""
    if (cfg.resume or cfg.eval_only) and (Path(cfg.output_dir) / train.CHECKPOINT_LAST).is_file():
        _, path, described = train.load_run_checkpoint(cfg.output_dir, "last" if cfg.resume else cfg.checkpoint)
        checkpoint, model = str(path), f"; checkpoint {described}"
    steps_per_epoch = -(-len(built.train_set) // cfg.batch_size)
    prompts = train.load_prompts(cfg)
    # another class list: the model built over it, the learned context carried over (class-specific context
    # by its rows: class-list-response asks for subsets of the classes it was trained on, so a subset is the
    # whole run for the rebuilt model; unified context keeps the run's classes, which its prompts file may name)
    csc = cfg.csc or (prompts is not None and prompts.csc)
    run_classes = None if csc or built.protocol is None else built.protocol.all_classnames
    for_classes = rebuilt_for_classes(lambda classes: train.build_model(
        cfg, classes, built.clip_model, built.tokenizer, prompts=prompts, run_classes=run_classes), built.classnames)
    return AuditTarget(
        built.model, built.classnames, built.clip_model, built.tokenizer, dataset=built.train_set,
        val_dataset=built.val_set, collate_fn=collate_samples, clip_name=cfg.clip_model, weights=weights,
        trainer=train, make_optimizer=lambda m: train.make_optimizer(cfg, m),
        description=f"VideoFeatureCLIP (videocoop), {cfg.clip_model} weights {weights}, {len(built.classnames)} "
                    f"classes, n_ctx {built.model.prompt_learner.n_ctx}, text_pool {cfg.text_pool}, "
                    f"temporal_agg {cfg.temporal_agg}, precision {cfg.precision}{model}",
        train_command=command, rebuild=lambda: train.build(cfg).model, checkpoint=checkpoint,
        make_scheduler=lambda opt: train.make_scheduler(cfg, opt, steps_per_epoch), distributed_step=videocoop_step,
        shots=cfg.shots, novel_classnames=list(built.protocol.novel) if built.protocol is not None else [],
        for_classes=for_classes, temporal_kind="attention" if cfg.temporal_agg == "transformer" else None,
    )


def run_info(target: AuditTarget, command: str, seconds: float, device: str | None = None) -> RunInfo:
    """What a report describes: the target, its weights, the devices (``device`` as given to
    ``run_audits``), the command that ran the audits, versions and time."""
    model = target.model
    return RunInfo(
        target=target.description or type(model).__name__,
        weights=f"{target.clip_name or 'CLIP not named'}, {target.weights or 'weights not stated by the target'}",
        foreign_device=resolve_device(device).type,
        command=command,
        train_command=target.train_command,
        versions=environment_line(),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        duration=seconds,
        construction=f"{type(model).__name__}(...) defined at {locate(type(model))}",
    )


def write_report(results, info: RunInfo, report: str, lang: str = "en") -> None:
    """The markdown report at ``report``, and beside it the eot-collapse cosine matrix as
    ``<report>_eot_collapse.png``, linked from the report."""
    for r in results:
        if r.extra.get("cosine"):
            png = Path(report).with_name(f"{Path(report).stem}_{r.id.replace('-', '_')}.png")
            write_heatmap_png(torch.tensor(r.extra["cosine"]), png)
            r.extra["heatmap_png"] = png.name
    write_text(report, to_markdown(results, info, lang), make_dirs=True)


def write_step_summary(results, info: RunInfo, report: str, lang: str = "en") -> str | None:
    """Append the summary table to ``$GITHUB_STEP_SUMMARY`` (the markdown GitHub Actions shows on
    the run's page) when that variable is set; returns the path written, or None."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    try:
        with open(path, "a", encoding="utf-8") as f:  # append: earlier steps wrote theirs
            f.write(to_step_summary(results, info, report, lang))
    except OSError as e:
        print(f"could not write the summary to $GITHUB_STEP_SUMMARY ({path}): {e}", file=sys.stderr)
        return None
    return path


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m checks``; returns the exit code (0 ok, 1 failed, 2 a bad flag or input, printed as one
    paragraph; the traceback too with ``VIDEOCOOP_TRACEBACK=1``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.list:
            for i in list_audits():
                print(f"{i:26s} {get_audit(i).title}")
            return ExitCode.OK
        if args.selftest:
            return selftest(args, argv)
        ids = [i.strip() for i in args.only.split(",") if i.strip()] if args.only else None
        for i in ids or []:
            get_audit(i)  # an unknown id is a usage error, before anything is built
        print(limit_threads(), file=sys.stderr)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="checks-") as workdir, warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)  # the report states the weights
            train_flags = _given_train_flags(argv)
            if args.target:
                if train_flags:
                    raise VideoCoopError(f"--target audits your own model; these train flags do not apply: "
                                         f"{' '.join(train_flags)}")
                target = load_target(args.target, read_classnames(args.classnames) if args.classnames else None)
            else:
                if args.classnames:
                    raise VideoCoopError("--classnames names the classes of a --target's bare model; without "
                                         "--target the classes come from the feature folders")
                target = build_own_target(args, train_flags, workdir)
            results = run_audits(target, ids, spawn=args.spawn)
        info = run_info(target, shlex.join(["python", "-m", "checks", *argv]), time.perf_counter() - start)
    except (UsageError, VideoCoopError) as e:
        print_user_error(str(e))
        return ExitCode.USAGE
    print_summary(results)
    write_report(results, info, args.report, args.lang)
    written = [args.report]
    if args.json:
        write_text(args.json, to_json(results), make_dirs=True)
        written.append(args.json)
    if args.junit:
        write_text(args.junit, to_junit(results), make_dirs=True)
        written.append(args.junit)
    if write_step_summary(results, info, args.report, args.lang):
        written.append("$GITHUB_STEP_SUMMARY")
    code = ExitCode(exit_code(results))
    print(f"{'FAILED' if code else 'OK'}: wrote {', '.join(written)}")
    return code


def selftest(args: argparse.Namespace, argv: list[str]) -> int:
    """``--selftest``: the table of audit -> caught / missed; 0 when every fault is caught and every
    clean case passes, 1 otherwise, 2 on a usage error (CUDA demanded and absent, other flags)."""
    from .selftest import device_line, format_table, run_selftest

    rest, skip = [], False
    for a in argv:  # --device (and its value) is the self-test's own: auto or cuda
        if skip or a.startswith("--device="):
            skip = False
            continue
        skip = a == "--device"
        if not skip:
            rest.append(a)
    others = _given_train_flags(rest)
    if others or args.target or args.only:
        raise UsageError(f"--selftest runs the planted faults alone; these flags do not apply: "
                         f"{' '.join(others + (['--target'] if args.target else []) + (['--only'] if args.only else []))}")
    if args.device not in ("auto", "cuda"):
        raise UsageError(f"--selftest --device {args.device}: the device audits use CUDA when present (auto) or "
                         f"must (cuda)")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--selftest --device cuda: no CUDA device is visible to torch here", file=sys.stderr)
        return ExitCode.USAGE
    print(limit_threads(), file=sys.stderr)
    print(f"self-test: {device_line()}")
    start = time.perf_counter()
    rows = run_selftest()
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    cleans = [r for r in rows if r.clean is not None]
    print(f"{'FAILED' if bad else 'OK'}: {sum(r.caught for r in rows)} of {len(rows)} planted faults caught, "
          f"{sum(r.clean_ok for r in cleans)} of {len(cleans)} clean cases passed ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    zoo_ok = run_foreign_zoo(start)
    return ExitCode.FAILED if bad or not zoo_ok else ExitCode.OK


def run_foreign_zoo(start: float) -> bool:
    """The foreign zoo's table (checks.faults.zoo): models of the families our users bring, each family's
    planted faults under the audit that names them; True when nothing was a false alarm or missed."""
    from . import zoo
    from .faults import NAMES, tiny_clip

    print("\nthe foreign zoo (checks.faults.zoo): clean models of other prompt-learning families, and their "
          "families' own faults")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = zoo.run_zoo(*tiny_clip(), list(NAMES))
    print(zoo.format_zoo(runs))
    print(zoo.summary_line(runs, time.perf_counter() - start))
    return zoo.ok(runs)
