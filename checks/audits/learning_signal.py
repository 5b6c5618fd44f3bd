"""learning-signal: the loss starts where it should, the logits read the video and are logits, and a few
steps of the run's own optimiser and schedule on one batch lower the loss."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import contract
from ..causes import video_response
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import training_batch
from ..locations import locate
from ..models import copy_model, preserved_modes
from ..text import NATURAL_PROMPT, natural_prompt_features
from ..training import STEPS, seeded, short_training

#: FAIL when the initial cross-entropy of the logits is more than this many times the larger of log(n_classes)
#: (chance) and the zero-shot loss of CLIP's hand-written prompts on the same videos. Measured
#: (docs/studies/learning_signal.py, learning_signal.txt): correct models start at 0.70-1.64 x that bound (our model
#: in four configurations and the foreign zoo, tiny CLIP; random ViT-B-32 with 101 classes 0.98); 3 leaves about 2x
#: above the highest.
INIT_FACTOR = 3.0
#: FAIL when the loss's gradient with respect to the logits is more than this many times the gradient of the
#: batch-mean cross-entropy (softmax - one-hot) / B: the loss scales the logits again, or sums over the batch.
#: Measured: every correct model (auxiliary losses such as KgCoOp's included) 1.0; the logit scale applied again
#: in the loss 17.8 x (tiny CLIP, exp(logit_scale) 14.3; about 100 with trained CLIP), a summed loss B x (10).
GRADIENT_FACTOR = 3.0
#: FAIL when the loss falls by less than this fraction of itself over the short training (STEPS steps from the
#: schedule's highest learning rate). Measured: correct models fall by 2.6e-3 (CLIP-Adapter's residual at AdamW
#: 1e-3) to 0.87; a loss that cannot move (a schedule held at 0, a learning rate of 0, a detached context) falls
#: by exactly 0. 1e-5 sits two orders below the slowest correct one and above fp32 rounding.
MIN_DROP = 1e-5
#: Videos in the batch the initial loss is measured on.
LOSS_BATCH = 16


def zero_shot_loss(target: AuditTarget, x: torch.Tensor, y: torch.Tensor, mask) -> tuple[float | None, str]:
    """Cross-entropy of CLIP's zero-shot logits on the batch: exp(CLIP's logit_scale) x the cosine of the mean
    of the normalised frames and the clean CLIP's ``encode_text`` of NATURAL_PROMPT per class; None (and why)
    when the target gives no CLIP, tokenizer or scale to compute it with."""
    scale = getattr(target.clip_model, "logit_scale", None)
    if target.tokenizer is None or not isinstance(scale, torch.Tensor):
        return None, "no CLIP model with a logit_scale, or no tokenizer: the zero-shot loss is not computed"
    try:
        text = F.normalize(natural_prompt_features(target)[1], dim=-1)  # [n_cls, E], eot-collapse's rows too
    except Skip as e:
        return None, f"no clean CLIP to compute the zero-shot loss with ({e})"
    with torch.no_grad():
        frames = F.normalize(x.float(), dim=-1)  # [B, T, D]
        m = torch.ones(frames.shape[:2], device=frames.device) if mask is None else mask.float()  # [B, T]
        video = F.normalize((frames * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1), dim=-1)  # [B, D]
        if video.shape[-1] != text.shape[-1]:
            return None, (f"the frame features are {video.shape[-1]}-d, CLIP's text {text.shape[-1]}-d: no zero-shot "
                          f"loss (feature-model-match judges the features)")
        logits = float(scale.detach().float().exp()) * video @ text.to(video.device).t()  # [B, n_cls]
        value = float(F.cross_entropy(logits, y.long()))
    return value, (f"zero-shot: exp(CLIP's logit_scale) x cos(mean of the normalised frames, encode_text("
                   f"'{NATURAL_PROMPT.format('{name}')}'))")


@dataclass
class Start:
    """The untrained model's training loss on a batch, and the logits it was computed from where the forward
    returns them (a loss computed inside the forward shows none)."""

    loss: float
    cross_entropy: float | None  # of the logits the training forward returned
    gradient_ratio: float | None  # |d loss / d logits| / |d mean cross-entropy / d logits|
    max_logit: float | None
    x: torch.Tensor
    y: torch.Tensor
    mask: object
    data: str


def initial_loss(target: AuditTarget) -> Start:
    """The training loss of the untrained model on a batch of the training set (a copy, training mode,
    seeded), with the gradient it sends into the logits the forward returned."""
    model = copy_model(target.model)
    x, y, mask, data = training_batch(target, LOSS_BATCH)
    shape, seen = (len(y), len(target.classnames)), []

    def keep(module, args, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and tuple(t.shape) == shape and t.requires_grad:
                t.retain_grad()
                seen.append(t)
                return

    handle = model.register_forward_hook(keep)
    with preserved_modes(model), seeded(device=x.device):
        model.train()
        if isinstance(getattr(model, "text_encoder", None), torch.nn.Module):
            model.text_encoder.eval()
        try:
            value = contract.loss(target, model, x, y, mask).float()
            if value.requires_grad:
                value.backward()
        finally:
            handle.remove()
    logits = seen[-1] if seen else None
    ce = ratio = top = None
    if logits is not None and target.output != "probabilities":  # declared probabilities: the loss is their NLL
        z = logits.detach().float()
        ce, top = float(F.cross_entropy(z, y.long())), float(z.abs().max())
        if logits.grad is not None:
            mean_ce = (z.softmax(-1) - F.one_hot(y.long(), shape[1]).float()) / shape[0]  # [B, n_cls]
            ratio = float(logits.grad.float().norm() / mean_ce.norm().clamp_min(1e-12))
    return Start(float(value.detach()), ce, ratio, top, x, y, mask, data)


def _beyond_scale(target: AuditTarget, max_logit: float) -> bool:
    """Whether logits of this size break |logit| <= exp(logit_scale), which logit-scale judges."""
    from .logit_scale import scales

    try:
        log_scale = scales(target)[0]
    except Skip:
        return False
    return not math.isfinite(max_logit) or max_logit > math.exp(min(log_scale, 80.0)) * 1.01


@audit(
    "learning-signal",
    title="The loss starts at chance, reads the video and falls",
    problem="training that never progresses: a loss that starts far above chance (the logit scale applied again in "
            "the loss), logits that ignore the video (the loss sits at chance), probabilities where logits are due "
            "(a softmax in the forward, then cross-entropy's own), a loss summed over the batch, a schedule that "
            "holds the learning rate at 0",
    fix="the initial loss is near log(n_classes) and the zero-shot loss of the same classes, and its gradient into "
        "the logits is the batch-mean cross-entropy's; different videos get different logits, which are not "
        "probabilities; a few steps of the run's own optimiser and schedule on one batch, from the schedule's "
        "highest learning rate, lower the loss",
    remediation="apply exp(logit_scale) once (in the model or in the loss, not both); return logits from forward "
                "(no softmax: cross-entropy applies it); average the loss over the batch; read the video features in "
                "the forward; give the schedule a learning rate above 0 after its warm-up",
    needs=("forward", "train"),
)
def learning_signal(target: AuditTarget) -> Outcome:
    """The initial loss, the logits' response to the videos, and a short training on one batch."""
    n = len(target.classnames)
    location = locate(type(target.model).forward)
    response = video_response(target)
    evidence = [f"different videos' logits differ by up to {response['spread']:.2e} (relative; tolerance "
                f"{response['tolerance']:.0e})"
                + ("" if response["zero_diff"] is None else f"; an all-zero video's by {response['zero_diff']:.2e}")]
    metrics: dict = {"logit_spread": response["spread"]}
    problems = [p for p in (response["probabilities"], response["cause"]) if p]
    if problems:  # the logits themselves are wrong: a loss on them says nothing more
        return Outcome(Status.FAIL, problems[0], metrics, evidence + problems[1:], location)

    start = initial_loss(target)
    chance = math.log(n)
    zs, zs_how = zero_shot_loss(target, start.x, start.y, start.mask)
    bound = max(chance, zs if zs is not None else 0.0)
    judged = start.loss if start.cross_entropy is None else start.cross_entropy
    metrics.update(initial_loss=start.loss, initial_cross_entropy=start.cross_entropy, chance=chance,
                   zero_shot_loss=zs, init_ratio=judged / bound, gradient_ratio=start.gradient_ratio)
    evidence += [f"initial loss {start.loss:.4g} on {start.data}"
                 + ("" if start.cross_entropy is None else f" (cross-entropy of its logits {start.cross_entropy:.4g})")
                 + f"; chance log({n}) = {chance:.4g}" + (f"; zero-shot loss {zs:.4g}" if zs is not None else ""), zs_how]
    if start.gradient_ratio is not None:
        evidence.append(f"the loss's gradient into the logits is {start.gradient_ratio:.3g} x the batch-mean "
                        f"cross-entropy's ((softmax - one-hot) / {len(start.y)})")
        if start.gradient_ratio > GRADIENT_FACTOR:
            summed = abs(start.gradient_ratio / len(start.y) - 1) < 0.05
            problems.append(
                f"the loss scales the logits' gradient by {start.gradient_ratio:.3g}: " + (
                    f"it is summed over the batch of {len(start.y)}, not averaged (the update doubles when the batch does)"
                    if summed else "it scales the logits again (exp(logit_scale) in the model and again in the loss?)")
                + f"; initial loss {start.loss:.4g} against chance {chance:.3g}")
    if not problems and (not math.isfinite(judged) or judged > INIT_FACTOR * bound):
        beyond = start.max_logit is not None and _beyond_scale(target, start.max_logit)
        what = (f"the initial {'cross-entropy of the logits' if start.cross_entropy is not None else 'loss'} {judged:.4g} "
                f"is {judged / bound:.1f} x the larger of chance (log {n} = {chance:.3g}) and the zero-shot loss "
                f"({'-' if zs is None else f'{zs:.3g}'}), beyond {INIT_FACTOR:g} x")
        if beyond:
            return Outcome(Status.SKIP, f"deferred to logit-scale: {what}, and the logits reach {start.max_logit:.4g}, "
                           f"beyond exp(logit_scale): logit-scale names the cause", {**metrics, "deferred_to": "logit-scale"},
                           evidence, location)
        problems.append(f"{what}: the labels do not match the classes, or the logits are scaled twice")

    run = short_training(target)
    sched = run.schedule
    first, last = run.losses[0], run.losses[-1]
    drop = (first - last) / abs(first) if first else 0.0
    metrics.update(losses=run.losses, loss_drop=drop, lr=run.lrs[0], schedule_peak_lr=sched.peak)
    evidence += [sched.describe(), f"{STEPS} steps of {run.optimizer} (lr {run.lrs[0]:g}) on {run.batch}: loss "
                 + " -> ".join(f"{v:.4g}" for v in run.losses) + f" (fell by {drop:.2e} of itself)"]
    if not all(math.isfinite(v) for v in run.losses):
        if not problems:
            return Outcome(Status.SKIP, f"deferred to optimizer-step: the loss turned {run.losses[-1]} in {STEPS} steps "
                           f"(optimizer-step names the step and the tensor)", {**metrics, "deferred_to": "optimizer-step"},
                           evidence, location)
    elif sched.peak <= 0 and sched.declared and sched.base > 0:
        problems.append(f"the schedule holds the learning rate at 0 for all {len(sched.lrs)} steps sampled (the "
                        f"optimiser's lr is {sched.base:g}): nothing will train")
    elif not drop >= MIN_DROP:
        moved = run.moved()
        if run.no_grad or run.lrs[0] <= 0 or not moved:
            why = (f"{len(run.no_grad)} trainable tensor(s) got no gradient ({', '.join(run.no_grad[:3])}): gradient-flow "
                   f"names where the graph is cut" if run.no_grad else
                   f"the optimiser's learning rate is {run.lrs[0]:g} and no trainable tensor moved: optimizer-step "
                   f"names it")
            owner = "gradient-flow" if run.no_grad else "optimizer-step"
            if not problems:
                return Outcome(Status.SKIP, f"deferred to {owner}: the loss did not move in {STEPS} steps because {why}",
                               {**metrics, "deferred_to": owner}, evidence, location)
            evidence.append(f"the loss did not move: {why}")
        else:
            problems.append(f"the loss fell by {drop:.2e} of itself in {STEPS} steps (below {MIN_DROP:g}) though "
                            f"{len(moved)} trainable tensor(s) moved: the loss does not follow them")
    if problems:
        return Outcome(Status.FAIL, problems[0], metrics, evidence + problems[1:], location)
    return Outcome(Status.PASS, f"initial loss {judged:.4g} ({judged / bound:.2f} x max(chance, zero-shot)); the logits "
                   f"read the video; {STEPS} steps at lr {run.lrs[0]:g}: loss {first:.4g} -> {last:.4g}",
                   metrics, evidence, location)
