"""How far two computations of the same numbers may differ: fp32 rounding, or in half precision a
noise floor measured on the model's own CLIP (or text encoder) against an fp32 copy."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import reference
from .core import AuditTarget, Skip
from .models import copy_model, fp32_copy
from .text import encode, encode_text_references, probe_classes, prompts_and_tokens, text_encoder

#: fp32 agreement demanded where two paths compute the same numbers (relative to the scale).
FP32_TOL = 1e-5
#: In half precision two correct computations of the same features differ by rounding, by
#: about as much as each differs from fp32. The noise floor is measured in the audit: CLIP's
#: own encode_text in the model's precision against an fp32 copy of it, on the probe classes.
#: A comparison FAILs only beyond NOISE_FACTOR times that floor. Measured by
#: docs/studies/precision_margins.py (its numbers: precision_margins.json beside it) with random
#: ViT-B-32 (30 UCF101 classes, 3 context seeds) and the tiny model (5 classes, 20 seeds),
#: bf16 and fp16: floors 0.9-1.5e-2 (bf16) and 1.4-1.9e-3 (fp16); correct models (plain and
#: shared-prefix paths, EOT and mean pooling, ctx_init) differed by at most 1.6x the floor
#: (ViT-B-32 fp16, shared prefix); the planted faults by at least 19x (causal-mask on a kept
#: permute, ViT-B-32 bf16). 8 is 5x above the one and 2.3x below the other.
NOISE_FACTOR = 8
#: Half precision when no floor can be measured (no CLIP model in the encoder's precision and
#: an encoder that cannot be copied): this many machine epsilons stand in for it (the floors
#: above are 1.2-1.9 eps in bf16, 1.4-2.0 eps in fp16).
FALLBACK_FLOOR_EPS = 4


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row ``max|a - b| / max|b|`` for ``[n, E]`` tensors."""
    scale = b.abs().amax(dim=-1).clamp_min(1e-12)
    return (a.float() - b.float()).abs().amax(dim=-1) / scale


def logits_tolerance(logits: torch.Tensor) -> float:
    """How far two computations of the same logits may differ (relative per row): fp32 rounding
    for fp32 logits; half precision: what the text tolerance allows in the fallback case."""
    if logits.dtype in (torch.float32, torch.float64):
        return FP32_TOL
    return NOISE_FACTOR * FALLBACK_FLOOR_EPS * torch.finfo(logits.dtype).eps


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a text path computes in: its ``dtype``, its transformer's cast dtype, or fp32."""
    dtype = getattr(module, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    get = getattr(getattr(module, "transformer", None), "get_cast_dtype", None)
    return get() if get is not None else torch.float32


@dataclass(frozen=True)
class Tolerance:
    """How far two computations of the same text features may differ (relative, per class)."""

    value: float
    floor: float | None  # the measured noise floor of the model's precision (None: fp32, or not measurable)
    note: str  # an evidence line: how the value was chosen
    precision: str = "float32"

    def __str__(self) -> str:
        """For a verdict: ``1e-05``, or ``0.11 = 8 x the bfloat16 noise floor 1.4e-02``."""
        if self.floor is None:
            return f"{self.value:g}"
        return f"{self.value:.2g} = {NOISE_FACTOR} x the {self.precision} noise floor {self.floor:.1e}"

    def metrics(self) -> dict[str, float | None]:
        return {"tolerance": self.value, "noise_floor": self.floor}


def tolerance(target: AuditTarget) -> Tolerance:
    """The tolerance of this model's precision, measured once per run.

    fp32 (and amp, whose weights are fp32): :data:`FP32_TOL`. Half precision:
    :data:`NOISE_FACTOR` times the noise floor: CLIP's encode_text in that precision against
    an fp32 copy, on the probe classes' own ids under EOT and mean pooling; without a CLIP
    model in that precision, the model's text encoder against an fp32 copy of it.
    """
    if "tolerance" not in target.cache:
        target.cache["tolerance"] = _tolerance(target)
    return target.cache["tolerance"]


def _tolerance(target: AuditTarget) -> Tolerance:
    te = text_encoder(target)
    dtype = compute_dtype(te)
    if dtype == torch.float32:
        return Tolerance(FP32_TOL, None, f"the text encoder computes in fp32: tolerance {FP32_TOL:g}")
    name = str(dtype).removeprefix("torch.")
    clip = target.clip_model
    prompts, tokens = prompts_and_tokens(target)
    idx = probe_classes(tokens.shape[0])
    if clip is not None and compute_dtype(reference.tower(clip)) == dtype:
        low = encode_text_references(target, tokens[idx])
        high = encode_text_references(target, tokens[idx], fp32_copy(clip))
        floor = max(float(rel_diff(low[k], high[k]).max()) for k in low)
        how = f"CLIP's own encode_text in {name} against an fp32 copy (EOT and mean pooling"
    else:
        why = "no CLIP model given" if clip is None else "CLIP computes in another precision"
        try:
            te32 = copy_model(te).float()
        except Skip:
            floor = FALLBACK_FLOOR_EPS * torch.finfo(dtype).eps
            return Tolerance(NOISE_FACTOR * floor, floor, f"the text encoder computes in {name}; {why} and the encoder "
                             f"cannot be copied, so the floor is not measured: {FALLBACK_FLOOR_EPS} x {name}'s machine "
                             f"epsilon = {floor:.1e} stands in; FAIL beyond {NOISE_FACTOR} x it", name)
        with torch.no_grad():
            high = te32(prompts[idx], tokens[idx]).float()
        floor = float(rel_diff(encode(target, prompts[idx], tokens[idx]), high).max())
        how = f"the model's text encoder in {name} against an fp32 copy of it ({why}"
    value = max(NOISE_FACTOR * floor, FP32_TOL)
    return Tolerance(value, floor, f"{name} noise floor {floor:.2e}: {how}, {len(idx)} classes, relative); FAIL "
                                   f"beyond {NOISE_FACTOR} x the floor = {value:.2e}", name)
