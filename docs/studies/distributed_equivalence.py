"""The distributed-equivalence tolerance, measured: how far 2 gloo processes on the CPU come from 1 process on the
same global batch (the largest relative difference of the gradients of each step and of the trainable tensors
after them), for our trainer's step with AdamW and with CoOp's SGD, on the tiny CLIP and on random ViT-B-32 with
the 101 UCF101 classes (as ``python -m checks --spawn`` builds it), and for the planted faults
(checks/faults/distributed.py: open_clip #1047, #616, #45; CoOp #14).

Run from the repository root: ``python docs/studies/distributed_equivalence.py`` (about a minute on two CPU
cores; it forks 3 processes per row); ``--tiny`` leaves out the ViT-B-32 rows. The output of a run is kept
beside this script: ``distributed_equivalence.txt``.
"""
import contextlib
import io
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # docs/studies/ -> the repository root
sys.path[:0] = [str(ROOT)]
warnings.simplefilter("ignore")

from checks import faults, run_audits  # noqa: E402
from checks.audits.distributed_equivalence import TOLERANCE  # noqa: E402
from checks.cli import main  # noqa: E402
from checks.faults import NAMES, tiny_clip  # noqa: E402

AUDIT = "distributed-equivalence"


def row(name: str, kind: str, status: str, metrics: dict) -> str:
    ratio = metrics.get("gradient_ratio")
    return (f"| {name} | {kind} | {metrics.get('max_rel_diff', float('nan')):.2e} | "
            f"{'-' if ratio is None else f'{ratio:.4g}'} | {status} |")


def sgd(target):
    target.make_optimizer = lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=2e-3,
                                                      momentum=0.9)
    return target


def tiny_rows() -> list[str]:
    clip, tok = tiny_clip()
    cases = [("ours (videocoop_step), AdamW", "correct", faults.distributed_clean),
             ("ours (videocoop_step), SGD momentum 0.9 (CoOp's)", "correct",
              lambda c, t, n: sgd(faults.distributed_clean(c, t, n)))]
    cases += [(m.__name__, "fault", m) for m in (faults.world_size_scaled, faults.gather_without_grad,
                                                   faults.no_all_reduce, faults.scalar_gathered)]
    out = []
    for name, kind, make in cases:
        torch.manual_seed(faults.SEED)
        (r,) = run_audits(make(clip, tok, NAMES), [AUDIT], spawn=True)
        out.append(row(f"tiny CLIP, {name}", kind, r.status.value.upper(), r.metrics))
    return out


def vit_rows() -> list[str]:
    out = []
    for flags in ([], ["--optimizer", "adamw", "--lr", "1e-4"]):
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            js = Path(tmp) / "r.json"
            main([*flags, "--spawn", "--only", AUDIT, "--report", f"{tmp}/r.md", "--json", str(js)])
            (r,) = json.loads(js.read_text())
        out.append(row(f"ViT-B-32 random, 101 UCF101 classes, {' '.join(flags) or 'the default run (SGD)'}",
                       "correct", r["status"].upper(), r["metrics"]))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    lines = ["| model and step | kind | largest relative difference, 2 processes vs 1 | step 1's gradient ratio | "
             "status |", "|---|---|---|---|---|", *tiny_rows()]
    if "--tiny" not in sys.argv:
        lines += vit_rows()
    print("\n".join(lines))
    print(f"\nthe audit's tolerance: {TOLERANCE:g} ({time.perf_counter() - start:.0f} s, torch {torch.__version__}, "
          f"1 thread)")
