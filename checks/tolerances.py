"""How far two computations of the same numbers may differ: fp32 rounding, or in half precision a
noise floor measured on the model itself. The precision is the one the model computes in (the
lowest its ops produce), never the dtype of what it returns: a bf16 temporal module whose logits come
out in fp32 still rounds like bf16."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import reference
from .core import AuditTarget, Skip
from .models import computes_in, copy_model, fp32_copy, run_model
from .text import clean_clip, encode, encode_text_references, probe_classes, probe_references, prompts_and_tokens

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
#: The video half in half precision: the floor is how far the logits move when the probe videos
#: move by half a unit of that precision (each value times 1 +- eps/2, signs seeded), the size of
#: one rounding carried through the model; FAIL beyond VIDEO_NOISE_FACTOR times it. Measured on
#: the zoo's bf16 temporal attention (checks.faults.zoo.heads; docs/studies/video_tolerance.py, 5 seeds
#: of videos): floors 5.3e-3 to 2.4e-2; the correct model with 3 zero frames appended and masked moved
#: by 0.09-0.27 x the floor; the same model without its padding mask by 6.4-35 x the tolerance (the
#: audit's own probe: floor 1.2e-2, correct 2.2e-3, unmasked 0.37).
VIDEO_NOISE_FACTOR = 2


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row ``max|a - b| / max|b|`` for ``[n, E]`` tensors."""
    a, b = a.float(), b.float().to(a.device)
    scale = b.abs().amax(dim=-1).clamp_min(1e-12)
    return (a - b).abs().amax(dim=-1) / scale


@dataclass(frozen=True)
class Tolerance:
    """How far two computations of the same values may differ (relative, per row)."""

    value: float
    floor: float | None  # the measured noise floor of the model's precision (None: fp32, or not measurable)
    note: str  # an evidence line: how the value was chosen
    precision: str = "float32"
    factor: int = NOISE_FACTOR

    def __str__(self) -> str:
        """For a verdict: ``1e-05``, or ``0.11 = 8 x the bfloat16 noise floor 1.4e-02``."""
        if self.floor is None:
            return f"{self.value:g}"
        return f"{self.value:.2g} = {self.factor} x the {self.precision} noise floor {self.floor:.1e}"

    def metrics(self) -> dict[str, float | None]:
        return {"tolerance": self.value, "noise_floor": self.floor}


def tolerance(target: AuditTarget) -> Tolerance:
    """The tolerance of the text path's precision, measured once per run.

    fp32 (and amp, whose weights are fp32): :data:`FP32_TOL`. Half precision:
    :data:`NOISE_FACTOR` times the noise floor: the clean CLIP's encode_text in that precision against
    an fp32 copy, on the probe classes' own ids under EOT and mean pooling; without a CLIP in that
    precision, the model's text encoder against an fp32 copy of it.
    """
    if "tolerance" not in target.cache:
        target.cache["tolerance"] = _tolerance(target)
    return target.cache["tolerance"]


def _tolerance(target: AuditTarget) -> Tolerance:
    prompts, tokens = prompts_and_tokens(target)
    idx = probe_classes(tokens.shape[0])
    dtype = computes_in(lambda: encode(target, prompts[idx[:1]], tokens[idx[:1]]))
    if dtype == torch.float32:
        return Tolerance(FP32_TOL, None, f"the text encoder computes in fp32: tolerance {FP32_TOL:g}")
    name = str(dtype).removeprefix("torch.")
    try:
        clip = clean_clip(target)
    except Skip:
        clip = None
    if clip is not None and reference.tower(clip).transformer.get_cast_dtype() == dtype:
        low = probe_references(target)
        high = encode_text_references(target, tokens[idx], fp32_copy(clip))
        floor = max(float(rel_diff(low[k], high[k]).max()) for k in low)
        how = f"the clean CLIP's encode_text in {name} against an fp32 copy (EOT and mean pooling"
    else:
        why = "no CLIP model given" if clip is None else "CLIP computes in another precision"
        te = getattr(target.model, "text_encoder", None)
        try:
            if target.encode_text is not None or te is None:
                raise Skip("the text encoder is a declared callable")
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


def video_tolerance(target: AuditTarget) -> Tolerance:
    """The tolerance of the logits for the video audits, measured once per run: :data:`FP32_TOL` when
    the forward computes in fp32, else :data:`VIDEO_NOISE_FACTOR` x the logits' move under a
    half-unit perturbation of the probe videos in the precision the forward computes in."""
    if "video_tolerance" not in target.cache:
        target.cache["video_tolerance"] = _video_tolerance(target)
    return target.cache["video_tolerance"]


def _video_tolerance(target: AuditTarget) -> Tolerance:
    from .inputs import probe_batch

    x, _, _ = probe_batch(target, 4)
    dtype = target.cache.get("forward_dtype") or computes_in(lambda: run_model(target, x))
    if dtype == torch.float32:
        return Tolerance(FP32_TOL, None, f"the forward computes in fp32: tolerance {FP32_TOL:g}")
    name, eps = str(dtype).removeprefix("torch."), torch.finfo(dtype).eps
    g = torch.Generator().manual_seed(0)
    sign = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x.device, x.dtype)
    floor = float(rel_diff(run_model(target, x * (1 + 0.5 * eps * sign)), run_model(target, x)).max())
    value = max(VIDEO_NOISE_FACTOR * floor, FP32_TOL)
    return Tolerance(value, floor, f"the forward computes in {name} (its lowest precision; the logits' dtype does not "
                     f"decide): noise floor {floor:.2e}, how far the logits move when the probe videos move by half a "
                     f"unit of {name}; FAIL beyond {VIDEO_NOISE_FACTOR} x it = {value:.2e}", name, VIDEO_NOISE_FACTOR)
