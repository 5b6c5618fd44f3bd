"""temperature: training and evaluation apply the same temperature to the cosines, or the difference is declared."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import contract
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import probe_batch
from ..locations import locate
from ..models import copy_model, preserved_buffers, preserved_modes, run_model
from ..tolerances import rel_diff, video_tolerance

#: The probe: the preflight's two videos (their outputs in both modes are kept from it).
BATCH = contract.PROBE
#: Two outputs computed the same way up to a factor: the factor is 1 within this (relative).
SAME_SCALE_TOL = 1e-4
#: The log-scale moves by this much (the temperature halves) to see which mode applies it.
MOVE = -math.log(2.0)
SEED = 12345


def scale_tensor(target: AuditTarget, model: nn.Module) -> tuple[str, torch.Tensor] | None:
    """The log-temperature the model holds: a parameter or buffer named ``logit_scale`` (the outermost one), else
    CLIP's own ``logit_scale`` when the model holds that very tensor."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    mine = sorted(((n, t) for n, t in named if n.split(".")[-1] == "logit_scale"), key=lambda nt: nt[0].count("."))
    if mine:
        return mine[0]
    clip = getattr(target.clip_model, "logit_scale", None)
    return next(((n, t) for n, t in named if clip is not None and t is clip), None)


def train_output(target: AuditTarget, model: nn.Module, x, y) -> tuple[torch.Tensor, str]:
    """The training forward's scores (the declared loss's value when the training forward gives no scores),
    seeded: a forward drawing random numbers (a template per class) draws the same ones every time."""
    with preserved_modes(model), preserved_buffers(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model.train()
        if target.loss is None:
            out = contract.logits(target, model, x)
            if isinstance(out, torch.Tensor) and list(out.shape) == [len(x), len(target.classnames)]:
                return out.float(), "the training forward's logits"
        torch.manual_seed(SEED)
        return contract.loss(target, model, x, y).float().reshape(1), "the training loss (the forward gives no logits)"


def _changed(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(rel_diff(a.reshape(len(a), -1), b.reshape(len(b), -1)).max())


@audit(
    "temperature",
    title="Training and evaluation apply the same temperature",
    problem="the temperature trained in one mode is not the one applied in the other: training scales the cosines "
            "by the trained exp(logit_scale), evaluation by a fixed 100 (CLIP's value when loaded), so once "
            "logit_scale has moved the model is evaluated at a temperature it was never trained at",
    fix="the training and evaluation forwards apply one temperature: their logits agree up to a factor of 1, and "
        "moving logit_scale moves both or neither; a fixed evaluation temperature passes only when declared",
    remediation="compute the scale once from the same tensor in both modes (logit_scale.exp()); if evaluation is "
                "meant to use another temperature, declare it: AuditTarget(eval_temperature=100.0)",
    needs=("forward", "loss"),
)
def temperature(target: AuditTarget) -> Outcome:
    """The two modes' outputs compared; then logit_scale halved on a copy: which mode follows it."""
    x, y, _ = probe_batch(target, BATCH)
    kind = contract.output_kind(target)[0]
    tol = max(video_tolerance(target).value, SAME_SCALE_TOL)
    evaluated = target.cache.get("probe_output")
    evaluated = run_model(target, x).float() if evaluated is None else evaluated.float()  # [B, n]
    trained = target.cache.get("probe_train_output") if target.loss is None else None  # the preflight's, unseeded
    how, seeded = "the training forward's logits", trained is None
    if seeded:
        trained, how = train_output(target, target.model, x, y)
    trained = trained.float()
    evidence = [f"{BATCH} probe videos; evaluation: the eval forward's {kind}; training: {how}"]
    metrics = {"output": kind}
    location = locate(type(target.model).forward)
    same_ratio = None
    if kind == "logits" and trained.shape == evaluated.shape:
        ratio = float((trained * evaluated).sum() / evaluated.pow(2).sum().clamp_min(1e-12))
        resid = _changed(trained, ratio * evaluated)
        metrics.update(train_over_eval=ratio, residual=resid)
        evidence.append(f"training logits = {ratio:.4g} x evaluation logits, within {resid:.1e} (relative)")
        if resid <= tol:  # the modes compute the same logits up to a factor: that factor is the temperatures' ratio
            same_ratio = ratio
    found = scale_tensor(target, target.model)
    trains = bool(found and found[1].requires_grad)
    if same_ratio is not None and abs(same_ratio - 1) > SAME_SCALE_TOL and target.eval_temperature is None:
        return Outcome(Status.FAIL, f"training applies {same_ratio:.4g} x the temperature evaluation applies: the two "
                       f"forwards give the same logits up to that factor", metrics, evidence, location)
    if same_ratio is not None and not trains:
        return Outcome(Status.PASS, f"training and evaluation give the same logits (ratio {same_ratio:.6g}): one "
                       f"temperature" + (f"; {found[0]} frozen" if found else ""), metrics, evidence, location)
    if found is None:
        raise Skip(f"the modes' outputs are not logits computed the same way ({kind} in evaluation, {how} in training) "
                   f"and the model holds no logit_scale to move: nothing shows which temperature each mode applies")
    name, value = found
    moved = copy_model(target.model)
    with torch.no_grad():
        dict(list(moved.named_parameters()) + list(moved.named_buffers()))[name].add_(MOVE)
    evaluated2 = run_model(target, x, model=moved).float()
    trained0 = trained if seeded else train_output(target, target.model, x, y)[0]
    trained2 = train_output(target, moved, x, y)[0]
    eval_move, train_move = _changed(evaluated2, evaluated), _changed(trained2, trained0)
    eval_uses, train_uses = eval_move > tol, train_move > tol
    old = math.exp(float(value.detach().float().reshape(-1)[0]))
    metrics.update(scale_name=name, scale_trains=trains, eval_moved=eval_move, train_moved=train_move)
    evidence.append(f"{name} moved from exp = {old:.4g} to {old / 2:.4g} on a copy ({'trainable' if trains else 'frozen'}): "
                    f"the evaluation output moved by {eval_move:.2e}, the training one by {train_move:.2e} (relative; "
                    f"tolerance {tol:.0e})")
    if eval_uses == train_uses:
        which = f"both apply exp({name})" if eval_uses else f"neither reads {name}"
        return Outcome(Status.PASS, f"training and evaluation apply one temperature: {which}"
                       + (f" (the same logits, ratio {same_ratio:.6g})" if same_ratio is not None else ""),
                       metrics, evidence, location)
    fixed, follows = ("evaluation", "training") if train_uses else ("training", "evaluation")
    said = (f"{follows} applies exp({name}), which {'trains' if trains else 'is frozen now'}; {fixed} a fixed "
            f"temperature (halving exp({name}) left its output unchanged)")
    if target.eval_temperature is not None and fixed == "evaluation":
        return Outcome(Status.PASS, f"{said}, as declared (AuditTarget(eval_temperature={target.eval_temperature:g}))",
                       metrics, evidence, location)
    if not trains:
        return Outcome(Status.WARN, f"{said}: they agree only while {name} keeps exp = {old:.4g} and the fixed one "
                       f"equals it; declare AuditTarget(eval_temperature=...) if that is meant", metrics, evidence,
                       location)
    return Outcome(Status.FAIL, said, metrics, evidence, location)
