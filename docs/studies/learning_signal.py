"""The learning-signal thresholds, measured: the initial cross-entropy against max(chance, zero-shot), the loss's
gradient into the logits against the batch-mean cross-entropy's, and the loss's fall over the short training, on
correct models (ours in several configurations and the foreign zoo on the tiny CLIP; ours on random ViT-B-32 with
the 101 UCF101 classes, as `python -m checks` builds it) and on the planted faults.

Run from the repository root: ``python docs/studies/learning_signal.py`` (a few minutes on two CPU cores; the
ViT-B-32 rows dominate); ``--tiny`` leaves them out. The output of a run is kept beside this script:
``learning_signal.txt``.
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
from checks.audits.learning_signal import GRADIENT_FACTOR, INIT_FACTOR, MIN_DROP  # noqa: E402
from checks.cli import main  # noqa: E402
from checks.faults import NAMES, tiny_clip, zoo  # noqa: E402

KEYS = ("init_ratio", "gradient_ratio", "loss_drop")


def row(name: str, kind: str, status: str, metrics: dict) -> str:
    cells = [f"{metrics.get(k):.3g}" if isinstance(metrics.get(k), float) else "-" for k in KEYS]
    return f"| {name} | {kind} | {' | '.join(cells)} | {status} |"


def tiny_rows() -> list[str]:
    clip, tok = tiny_clip()
    cases = [("ours", lambda c, t, n: faults.with_data(c, t, n))]
    cases += [(f"ours, {k}={v}", lambda c, t, n, k=k, v=v: _configured(c, t, n, **{k: v}))
              for k, v in (("temporal_agg", "transformer"), ("text_pool", "mean"), ("class_token_position", "middle"))]
    cases += [(f"zoo: {f.name}", f.clean) for f in zoo.FAMILIES]
    bad = [(m.__name__, m) for m in (faults.loss_scaled_twice, faults.loss_summed, faults.scale_exponentiated_twice,
                                     faults.schedule_at_zero, faults.sgd_lr_zero, faults.sos_pooling)]
    out = []
    for kind, group in (("correct", cases), ("fault", bad)):
        for name, make in group:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(faults.SEED)
                (r,) = run_audits(make(clip, tok, NAMES), ["learning-signal"])
            out.append(row(f"tiny CLIP, {name}", kind, r.status.value.upper(), r.metrics))
    return out


def _configured(clip, tok, names, **kwargs):
    target = faults.with_data(clip, tok, names)
    target.model = faults.seeded(type(target.model), names, clip, tok, n_ctx=4, **kwargs)
    return target


def vit_rows() -> list[str]:
    out = []
    for flags in ([], ["--temporal-agg", "transformer"], ["--optimizer", "adamw", "--lr", "1e-4"]):
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            js = Path(tmp) / "r.json"
            main([*flags, "--only", "learning-signal", "--report", f"{tmp}/r.md", "--json", str(js)])
            (r,) = json.loads(js.read_text())
        out.append(row(f"ViT-B-32 random, 101 UCF101 classes {' '.join(flags) or '(the default run)'}", "correct",
                       r["status"].upper(), r["metrics"]))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    lines = ["| model | kind | initial CE / max(chance, zero-shot) | loss gradient / mean CE's | loss fall over the "
             "short training | status |", "|---|---|---|---|---|---|", *tiny_rows()]
    if "--tiny" not in sys.argv:
        lines += vit_rows()
    print("\n".join(lines))
    print(f"\nthresholds: FAIL above INIT_FACTOR {INIT_FACTOR:g}, above GRADIENT_FACTOR {GRADIENT_FACTOR:g}, below MIN_DROP "
          f"{MIN_DROP:g} ({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")
