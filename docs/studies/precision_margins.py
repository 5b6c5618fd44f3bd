"""Regenerate the half-precision margins of docs/audits.md ("The tolerance of audits 5-7").

    python docs/studies/precision_margins.py                          # both models
    python docs/studies/precision_margins.py --models videocoop-tiny  # the tiny CLIP alone (minutes)

OMP_NUM_THREADS=1 is much faster on a machine shared with other jobs.

In bf16 and fp16 the text-encoder-parity, causal-mask and batch-independence audits measure
a noise floor (CLIP's own encode_text in that precision against an fp32 copy) and FAIL beyond
NOISE_FACTOR times it. For each model and half precision this runs the three audits on
correct models (the shared-prefix and plain paths, EOT and mean pooling, an initial phrase;
several random contexts) and each audit on its planted faults, and reports every measured
difference as a multiple of that run's floor: the correct models' largest multiple and the
faults' smallest, which NOISE_FACTOR must sit between. Writes every number to
docs/studies/precision_margins.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]  # this checkout's packages (the planted faults are checks.faults)
warnings.simplefilter("ignore")

from bench.__main__ import environment  # noqa: E402
from checks import faults, run_audits  # noqa: E402
from checks.tolerances import NOISE_FACTOR  # noqa: E402
from videocoop.clip import TINY_MODEL, load_clip  # noqa: E402
from videocoop.data import UCF101  # noqa: E402
from videocoop.utils.files import write_json  # noqa: E402

OUT = Path(__file__).with_name("precision_margins.json")
AUDITS = ["text-encoder-parity", "causal-mask", "batch-independence"]
#: model -> (class names, context seeds)
MODELS = {TINY_MODEL: (faults.NAMES, range(20)), "ViT-B-32": (UCF101[:30], range(3))}
CORRECT = {"shared-prefix path, EOT": {}, "plain path (front, CSC)": {"class_token_position": "front", "csc": True},
           "mean pooling": {"text_pool": "mean"}, "initial phrase": {"ctx_init": "a video of a"}}
#: (audit, planted fault): the faults tests/test_checks_precision.py plants in half precision
FAULTS = [("text-encoder-parity", faults.permute_no_mask), ("text-encoder-parity", faults.last_position),
          ("text-encoder-parity", faults.sos_pooling), ("text-encoder-parity", faults.shared_path_prefix_only),
          ("causal-mask", faults.no_causal_mask), ("causal-mask", faults.last_position),
          ("causal-mask", faults.permute_no_mask), ("batch-independence", faults.permute_no_mask),
          ("batch-independence", faults.shared_path_prefix_only)]


def measured(result) -> float:
    """The largest difference an audit measured (its verdict's number)."""
    m = result.metrics
    return max(m.get("max_rel_diff", m.get("max_rel_change", 0.0)), m.get("forward_path_max_rel_diff", 0.0))


def study(model: str, precision: str) -> dict:
    names, seeds = MODELS[model]
    clip, tok = load_clip(model, precision=precision, seed=0)
    floors, correct, planted = [], [], []
    for config, kwargs in CORRECT.items():
        for seed in seeds:
            torch.manual_seed(seed)  # the random context
            results = run_audits(faults.clean(clip, tok, names, **kwargs), AUDITS)
            for r in results:
                floor = r.metrics["noise_floor"]
                floors.append(floor)
                correct.append({"config": config, "seed": seed, "audit": r.id, "status": r.status.value,
                                "measured": measured(r), "floor": floor, "ratio": measured(r) / floor})
    for audit, make in FAULTS:
        torch.manual_seed(0)
        (r,) = run_audits(make(clip, tok, names), [audit])
        floor = r.metrics["noise_floor"]
        floors.append(floor)
        planted.append({"fault": make.__name__, "audit": audit, "status": r.status.value, "measured": measured(r),
                        "floor": floor, "ratio": measured(r) / floor})
    worst = max(correct, key=lambda c: c["ratio"])
    closest = min(planted, key=lambda p: p["ratio"])
    return {"classes": len(names), "context_seeds": len(seeds), "floor_min": min(floors), "floor_max": max(floors),
            "correct_max_ratio": worst["ratio"], "correct_worst": worst, "fault_min_ratio": closest["ratio"],
            "fault_closest": closest, "correct": correct, "faults": planted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results.update({"command": "python docs/studies/precision_margins.py", "noise_factor": NOISE_FACTOR})
    results.setdefault("models", {})
    print("| model | precision | noise floors | correct models: largest multiple | planted faults: smallest multiple |")
    print("|---|---|---|---|---|")
    for model in args.models:
        for precision in ("bf16", "fp16"):
            t0, started = time.perf_counter(), environment("cpu")
            row = study(model, precision)
            row.update(seconds=round(time.perf_counter() - t0, 1), environment=started,
                       date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
            results["models"].setdefault(model, {})[precision] = row
            w, c = row["correct_worst"], row["fault_closest"]
            print(f"| {model} | {precision} | {row['floor_min']:.1e}-{row['floor_max']:.1e} | "
                  f"{row['correct_max_ratio']:.1f} ({w['config']}, {w['audit']}) | "
                  f"{row['fault_min_ratio']:.0f} ({c['fault']}, {c['audit']}) |", flush=True)
            row["load_avg_after"] = os.getloadavg()
            write_json(OUT, results)  # a run cut short keeps what it finished, whole (the next run reads it)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
