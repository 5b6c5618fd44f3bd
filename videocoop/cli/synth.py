"""``videocoop synth``: planted-prompt synthetic features (:mod:`videocoop.data.synthetic`)."""
from __future__ import annotations

import argparse
import inspect
from types import SimpleNamespace

from ..data.synthetic import synthesize
from .common import Command, ExitCode, add_clip_arguments, flag


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("synth", help="write planted-prompt synthetic features",
                            description="Write synthetic features whose class text features come from a secret context.")
    d = {k: p.default for k, p in inspect.signature(synthesize).parameters.items()}
    parser.add_argument("--out", required=True, help="writes OUT/train, OUT/val, OUT/custom_prompts.json")
    parser.add_argument("--n-classes", type=int, default=d["n_classes"], help=f"UCF101 names, spread evenly (default {d['n_classes']})")
    clip = SimpleNamespace(clip_model=d["clip_model"], pretrained=None, clip_checkpoint=None, clip_seed=d["clip_seed"])
    add_clip_arguments(parser, clip, f"default {d['clip_model']} (random weights unless given)",
                       f"seed of random CLIP weights (default {d['clip_seed']})")
    for name in ("train_per_class", "val_per_class", "num_frames", "seed"):
        parser.add_argument(flag(name), type=int, default=d[name], help=f"default {d[name]}")
    parser.add_argument("--max-frames", type=int, default=None, help="vary the length in [num-frames, max-frames]")
    parser.add_argument("--noise", type=float, default=d["noise"], help=f"per-frame noise norm, relative to the class signal (default {d['noise']})")
    parser.add_argument("--drift", type=float, default=d["drift"], help=f"temporal drift norm over a video (default {d['drift']})")
    return parser


def run(args: argparse.Namespace, given: set[str]) -> int:
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
    return ExitCode.OK


COMMAND = Command("synth", add_parser, run)
