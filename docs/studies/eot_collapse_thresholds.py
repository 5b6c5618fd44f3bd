"""Reproduce the eot-collapse threshold table of the README ("The eot-collapse thresholds, measured").

Run from the repository root: ``python docs/studies/eot_collapse_thresholds.py`` (about two minutes
on two CPU cores). Random ViT-B-32 weights (seed 0), the 101 UCF101 names, context drawn
with seed 0; the faulty text encoders are the planted faults of ``checks/faults/text.py``.
"""
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # docs/studies/ -> the repository root
sys.path[:0] = [str(ROOT)]  # this checkout's packages (the planted faults are checks.faults)
warnings.simplefilter("ignore")

from checks import (  # noqa: E402
    AuditTarget,
    faults,  # noqa: E402
    run_audits,
)
from videocoop.clip import load_clip  # noqa: E402
from videocoop.data import UCF101  # noqa: E402
from videocoop.model import VideoFeatureCLIP  # noqa: E402


def target(clip, tok, encoder=None, **kwargs) -> AuditTarget:
    torch.manual_seed(0)
    model = VideoFeatureCLIP(UCF101, clip, tok, **kwargs)
    if encoder is not None:
        te = model.text_encoder
        model.text_encoder = encoder(clip, pool=te.pool, eot_token_id=te.eot_token_id).requires_grad_(False)
    return AuditTarget(model, UCF101, clip, tok)


def main() -> None:
    clip, tok = load_clip("ViT-B-32")
    cases = {
        "EOT pooling, random context (our default)": {},
        "mean pooling, random context (the seed's fix)": dict(text_pool="mean"),
        'EOT pooling, `ctx_init "a video of a"`': dict(ctx_init="a video of a"),
        'mean pooling, `ctx_init "a video of a"`': dict(ctx_init="a video of a", text_pool="mean"),
        "CoOp's permute kept, mask dropped": dict(encoder=faults.PermuteNoMaskEncoder),
        "EOT looked up by a wrong id (every class pools its SOS)": dict(encoder=faults.WrongEotIdEncoder),
        "no causal mask": dict(encoder=faults.NoMaskEncoder),
        "pooling at the last position": dict(encoder=faults.LastPositionEncoder),
    }
    print("| configuration | mean cos | min margin | effective rank (of 101) | spread ratio | status |")
    print("|---|---|---|---|---|---|")
    for name, kwargs in cases.items():
        (r,) = run_audits(target(clip, tok, **kwargs), ["eot-collapse"])
        m = r.metrics
        print(f"| {name} | {m['mean_cos']:.4f} | {m['min_margin']:.1e} | {m['effective_rank']:.1f} | "
              f"{m['spread_ratio']:.2f} | {r.status.value.upper()} |", flush=True)
    for ref, s in r.extra["table"].items():
        if ref.startswith("encode_text"):
            print(f"{ref}: mean cos {s['mean_cos']:.4f}")


if __name__ == "__main__":
    main()
