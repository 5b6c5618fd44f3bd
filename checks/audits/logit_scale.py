"""logit-scale: logits are exp(logit_scale) x cosine: normalised features, the scale applied once, frozen."""
from __future__ import annotations

import math

import torch

from .. import contract, scores
from ..causes import deferred
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import probe_videos
from ..locations import locate
from ..models import copy_model, run_model
from ..tolerances import FP32_TOL, rel_diff, video_tolerance

BATCH = 4


def _log(value: torch.Tensor) -> float:
    return float(value.detach().float().reshape(-1)[0])


def _exp(x: float) -> float:
    return math.exp(x) if x < 88 else math.inf


def scales(target: AuditTarget) -> tuple[float, str, torch.Tensor | None, float | None]:
    """``(expected log-scale, what it is, the model's own logit_scale or None, CLIP's log-scale or None)``.

    The logits must use CLIP's temperature, exp(clip_model.logit_scale), unless the model trains
    its own (``model.trains_logit_scale``); without a CLIP model, the model's own log-scale.
    """
    own = getattr(target.model, "logit_scale", None)
    own = own if isinstance(own, torch.Tensor) else None
    trains = trains_scale(target)
    clip = getattr(target.clip_model, "logit_scale", None) if target.clip_model is not None else None
    clip_log = _log(clip) if isinstance(clip, torch.Tensor) else None
    if own is not None and (clip_log is None or trains):
        return _log(own), "model.logit_scale", own, clip_log
    if clip_log is not None:
        return clip_log, "clip_model.logit_scale", own, clip_log
    raise Skip("neither the model nor its CLIP model has a logit_scale: nothing to hold the logits to")


def trains_scale(target: AuditTarget) -> bool:
    """Whether the model says it trains its logit scale: ``model.trains_logit_scale``, or the target
    declares ``logit_scale`` a trainable CLIP tensor (``trainable_clip``)."""
    import fnmatch

    return bool(getattr(target.model, "trains_logit_scale", False)) or any(
        fnmatch.fnmatchcase("logit_scale", p) for p in target.trainable_clip)


@audit(
    "logit-scale",
    title="Logits are exp(logit_scale) x cosine",
    problem="features left unnormalised (logits grow with their norms), the scale exponentiated twice (inf) "
            "or not at all (a temperature of 4.6 instead of 100), or CLIP's logit_scale trained by accident",
    fix="every logit equals exp(logit_scale) x the cosine of the L2-normalised video and text features: rows "
        "bounded by exp(logit_scale), the exp applied once, the scale frozen unless the model says it trains it",
    remediation="normalise both features (F.normalize(x, dim=-1)) before the product; compute "
                "logit_scale.exp() once in forward from the stored log-scale (CLIP stores log(100)); keep "
                "logit_scale frozen (a buffer, or requires_grad_(False)) or set model.trains_logit_scale = True",
    needs=("forward",),
)
def logit_scale(target: AuditTarget) -> Outcome:
    """Scores of a batch against exp(logit_scale) x the cosine of the model's own video and text features,
    combined over a class's prompts as declared and softmaxed when the output is probabilities."""
    log_scale, name, own, clip_log = scales(target)
    scale = _exp(log_scale)
    model, made = copy_model(target.model), "a copy of the model"
    x = probe_videos(target, BATCH)
    logits = run_model(target, x, model=model).float()  # [B, n_cls]
    kind, kind_how = contract.output_kind(target)
    if kind == "probabilities" and target.output is None:  # undeclared probabilities: learning-signal's finding
        cause = deferred(target, "probabilities", what="the logits' scale")
        if cause:
            return cause
    how_combine = contract.combine(target)
    own_log = None if own is None else _log(own)
    evidence = [f"expected scale exp({name}) = exp({log_scale:.4g}) = {scale:.4g}"
                + (f"; model.logit_scale holds {own_log:.4g}" if own is not None and name != "model.logit_scale" else ""),
                f"output [{BATCH}, {logits.shape[-1]}] of {made}: {kind}, {kind_how}; largest |value| "
                f"{float(logits.abs().max()):.4g}"]
    if target.prompts_per_class > 1:
        evidence.append(f"{target.prompts_per_class} prompts per class, combined by {how_combine}")
    metrics = {"logit_scale": log_scale, "scale": scale, "max_abs_logit": float(logits.abs().max()), "output": kind}
    location = (locate(getattr(type(target.model), "logits", type(target.model).forward), r"logit_scale")
                or locate(type(target.model).forward))
    # what a stored value that is not CLIP's says: exponentiated already, or another temperature
    stored = None
    if own_log is not None and clip_log is not None and name == "clip_model.logit_scale" and abs(own_log - clip_log) > 1e-4:
        stored = (f"model.logit_scale holds {own_log:.4g} = exp(CLIP's {clip_log:.4g}): stored exponentiated, then "
                  f"exponentiated again in the forward" if math.isclose(own_log, math.exp(clip_log), rel_tol=1e-3)
                  else f"model.logit_scale holds {own_log:.4g}, CLIP's is {clip_log:.4g}")
    problems = []
    trains = trains_scale(target)
    if own is not None and own.requires_grad and not trains:
        problems.append("model.logit_scale requires grad: CLIP's temperature would train (CoOp keeps it frozen; set "
                        "model.trains_logit_scale = True if that is meant)")
    if own is not None:
        evidence.append("model.logit_scale: " + ("trainable, and the model says it trains it" if own.requires_grad and trains
                                                 else "trainable" if own.requires_grad else "frozen"))
    if not bool(torch.isfinite(logits).all()):
        why = stored or f"exp applied twice? exp(exp({log_scale:.3g})) overflows"
        problems.insert(0, f"the logits are not finite ({int((~torch.isfinite(logits)).sum())} of {logits.numel()} "
                        f"inf/NaN): {why}")
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location)
    tol = max(video_tolerance(target).value, FP32_TOL)
    if kind == "probabilities" and not contract.looks_like_probabilities(logits):
        sums = logits.sum(dim=1)
        problems.insert(0, f"the output is declared probabilities, but its rows sum to {float(sums.min()):.4g} to "
                        f"{float(sums.max()):.4g}" + (" with negative values" if bool((logits < 0).any()) else ""))
    elif kind == "logits" and float(logits.abs().max()) > scale * (1 + tol):
        problems.insert(0, f"logits reach {float(logits.abs().max()):.4g}, beyond exp({name}) = {scale:.4g}: "
                        + (stored or "a cosine is at most 1, so the features are not L2-normalised before the product"))
    parts, gap = scores.features(target, model, x)
    if parts is not None:
        video, text, rows, how, norms = parts
        out = logits[rows]
        want = scores.expected(video[rows], text, scale, how_combine, kind)  # [rows, n_cls]
        diff = rel_diff(out, want)
        if kind == "logits" and how_combine != "max" and text.shape[1] == 1:  # the scale a least-squares fit gives
            cos = want / scale
            fitted = float((out * cos).sum() / cos.pow(2).sum().clamp_min(1e-12))
        else:
            fitted = scores.fit_scale(out, video[rows], text, how_combine, kind)[0]
        metrics.update(max_rel_diff=float(diff.max()), fitted_scale=fitted)
        what = ("cos(normalised encode_video, normalised text features)" if text.shape[1] == 1 else
                f"each prompt's cosine, combined by {how_combine}") + (", softmaxed" if kind == "probabilities" and
                                                                       how_combine != "probabilities" else "")
        evidence.append(f"exp({name}) x {what} vs the output{how}: {float(diff.max()):.2e} (relative; tolerance "
                        f"{tol:g}); the output fits a scale of {fitted:.4g}")
        if float(diff.max()) > tol and not problems:
            off_unit = float((norms - 1).abs().max())
            if math.isclose(fitted, log_scale, rel_tol=0.05):
                why = f"the scale is applied without its exp (the output fits {fitted:.4g} = {name} itself)"
            elif off_unit > 1e-3 and kind == "logits":
                why = (f"the features are not L2-normalised before the product (encode_video's norms "
                       f"{float(norms.min()):.3g} to {float(norms.max()):.3g})")
            elif not math.isclose(fitted, scale, rel_tol=0.05):
                why = stored or f"the output fits a scale of {fitted:.4g}, not {scale:.4g}"
            else:
                why = "the features are not L2-normalised before the product"
            problems.append(f"{kind} differ from exp({name}) x cosine by {float(diff.max()):.2e} (relative): {why}")
    elif kind == "probabilities":
        raise Skip(f"the output is probabilities, which no bound on logits judges, and cannot be recomputed: {gap}")
    else:
        evidence.append(f"no video or text features to hold the logits to ({gap}): only the bound |logit| <= "
                        "exp(logit_scale) is checked")
    if problems:
        cause = deferred(target, "probabilities", "ignores_video", "nondeterministic", what="the logits' scale")
        return cause or Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location)
    kept = "" if own is None else f"; model.logit_scale {'trained, as the model says' if own.requires_grad else 'frozen'}"
    fit = (f" (within {metrics['max_rel_diff']:.1e})" if "max_rel_diff" in metrics
           else f": the bound holds (largest |logit| {float(logits.abs().max()):.4g})")
    said = ("logits =" if kind == "logits" else "probabilities = the mean of each prompt's softmax of"
            if how_combine == "probabilities" else "probabilities = the softmax of")
    return Outcome(Status.PASS, f"{said} exp({name}) x cosine = {scale:.4g} x cosine{fit}{kept}",
                   metrics, evidence, location)
