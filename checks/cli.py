"""``python -m checks``: build the target, run the audits, write the reports, exit 0 / 1 / 4."""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import open_clip
import torch

from videocoop import train
from videocoop.classnames import UCF101
from videocoop.cli import ExitCode, UsageError, _Parser, add_train_arguments, config_from_args
from videocoop.clip import UntrainedModelWarning, weights_id
from videocoop.data import collate_samples
from videocoop.errors import VideoCoopError
from videocoop.synth import synthesize

from .core import AuditTarget, exit_code, get_audit, list_audits, resolve_device, run_audits
from .probe import locate, relpath
from .report import RunInfo, print_summary, to_json, to_junit, to_markdown, to_step_summary
from .report.heatmap import write_heatmap_png

DEFAULT_REPORT = "reports/verification.md"
#: The embedded default: random-weight ViT-B-32, UCF101 names, a few synthetic videos per class.
DEFAULT_CLIP = "ViT-B-32"
DEFAULT_VIDEOS_PER_CLASS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    add_train_arguments(parser, require_data=False)
    return parser


def load_target(spec: str) -> AuditTarget:
    """Import ``pkg.module:function`` and call it; a usage error names what went wrong."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise VideoCoopError(f"--target must look like pkg.module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise VideoCoopError(f"--target {spec}: cannot import {module_name!r} ({e})") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise VideoCoopError(f"--target {spec}: {module_name} has no function {func_name!r}; it has: {', '.join(names)}")
    try:
        built = func()
    except Exception as e:  # noqa: BLE001: the user's factory failed: one line, where, no traceback
        where = traceback.extract_tb(e.__traceback__)[-1]
        raise VideoCoopError(f"--target {spec}: {func_name}() raised {type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0]} (at {relpath(where.filename)}:{where.lineno})") from e
    target = AuditTarget.coerce(built)
    if target.rebuild is None:  # calling the factory again gives a fresh model (checkpoint-roundtrip)
        target.rebuild = lambda: AuditTarget.coerce(func()).model
    if not target.description:
        target.description = f"{type(target.model).__name__} from --target {spec}"
    return target


def _given_train_flags(argv: list[str]) -> list[str]:
    """The argv part that belongs to ``videocoop train`` (everything but this tool's own flags)."""
    own = {"--target", "--only", "--report", "--json", "--junit", "--lang"}
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in own:
            skip = "=" not in a
            continue
        if name != "--list":
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
    weights = weights_id(cfg.pretrained, cfg.clip_checkpoint, cfg.clip_seed)
    return AuditTarget(
        built.model, built.classnames, built.clip_model, built.tokenizer, dataset=built.train_set,
        val_dataset=built.val_set, collate_fn=collate_samples, clip_name=cfg.clip_model, weights=weights,
        trainer=train, make_optimizer=lambda m: train.make_optimizer(cfg, m),
        description=f"VideoFeatureCLIP (videocoop), {cfg.clip_model} weights {weights}, {len(built.classnames)} "
                    f"classes, n_ctx {built.model.prompt_learner.n_ctx}, text_pool {cfg.text_pool}, "
                    f"temporal_agg {cfg.temporal_agg}, precision {cfg.precision}",
        train_command=command, rebuild=lambda: train.build(cfg).model,
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
        versions=f"torch {torch.__version__}, open_clip {open_clip.__version__}",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        duration=seconds,
        construction=f"{type(model).__name__}(...) defined at {locate(type(model))}",
    )


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def write_report(results, info: RunInfo, report: str, lang: str = "en") -> None:
    """The markdown report at ``report``, and beside it the eot-collapse cosine matrix as
    ``<report>_eot_collapse.png``, linked from the report."""
    for r in results:
        if r.extra.get("cosine"):
            png = Path(report).with_name(f"{Path(report).stem}_{r.id.replace('-', '_')}.png")
            write_heatmap_png(torch.tensor(r.extra["cosine"]), png)
            r.extra["heatmap_png"] = png.name
    _write(report, to_markdown(results, info, lang))


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
    """Run ``python -m checks``; returns the exit code (0 ok, 1 failed, 4 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.list:
            for i in list_audits():
                print(f"{i:26s} {get_audit(i).title}")
            return ExitCode.OK
        ids = [i.strip() for i in args.only.split(",") if i.strip()] if args.only else None
        for i in ids or []:
            get_audit(i)  # an unknown id is a usage error, before anything is built
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="checks-") as workdir, warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)  # the report states the weights
            train_flags = _given_train_flags(argv)
            if args.target:
                if train_flags:
                    raise VideoCoopError(f"--target audits your own model; these train flags do not apply: "
                                         f"{' '.join(train_flags)}")
                target = load_target(args.target)
            else:
                target = build_own_target(args, train_flags, workdir)
            results = run_audits(target, ids)
        info = run_info(target, shlex.join(["python", "-m", "checks", *argv]), time.perf_counter() - start)
    except (UsageError, VideoCoopError) as e:
        print(str(e), file=sys.stderr)
        return ExitCode.USAGE
    print_summary(results)
    write_report(results, info, args.report, args.lang)
    written = [args.report]
    if args.json:
        _write(args.json, to_json(results))
        written.append(args.json)
    if args.junit:
        _write(args.junit, to_junit(results))
        written.append(args.junit)
    if write_step_summary(results, info, args.report, args.lang):
        written.append("$GITHUB_STEP_SUMMARY")
    code = ExitCode(exit_code(results))
    print(f"{'FAILED' if code else 'OK'}: wrote {', '.join(written)}")
    return code
