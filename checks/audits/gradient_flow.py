"""gradient-flow: one real optimiser step trains what the model learns and nothing of CLIP."""
from __future__ import annotations

import fnmatch

import torch

from .. import contract
from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import probe_batch
from ..locations import locate
from ..models import copy_model
from ..text import clean_clip

#: Learning rate of the probe step: large enough that every non-zero gradient moves its
#: tensor by more than float rounding.
PROBE_LR = 0.1
#: Steps of the run's own optimiser when it holds tensors that do not train: do they stay put?
OPTIMIZER_STEPS = 3


def _step(target, model, opt, x, y) -> float:
    opt.zero_grad(set_to_none=True)
    loss = contract.loss(target, model, x, y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def clip_param_names(target: AuditTarget, named: dict[str, torch.Tensor]) -> set[str]:
    """The model's parameters that are CLIP's own: the same tensors as the clean CLIP's (shared with
    the CLIP model handed over), or copies of them (the name ends with the clean tensor's name and the
    values are equal). Tensors a model adds inside CLIP's tower (deep prompts) are its own."""
    if target.clip_model is None:
        return set()
    try:
        clean = clean_clip(target)
    except Exception:  # noqa: BLE001: no clean CLIP to match against (the text audits say why)
        return set()
    reference = dict(clean.text.named_parameters()) | dict(clean.text.named_buffers())
    if clean.logit_scale is not None:
        reference["logit_scale"] = clean.logit_scale
    ptrs = {t.data_ptr() for t in reference.values() if t is not None}
    names = set()
    for n, p in named.items():
        if p.data_ptr() in ptrs:
            names.add(n)
            continue
        k, q = next(((k, q) for k, q in reference.items() if q is not None and (n == k or n.endswith("." + k))),
                    (None, None))
        if q is None or q.shape != p.shape:
            continue
        a = p.detach().cpu()
        # a constant (a zero bias) proves nothing, but for the one scalar CLIP has: its logit scale
        informative = p.numel() >= 2 and not torch.all(a == a.flatten()[0]) or k == "logit_scale"
        if informative and torch.equal(a, q.detach().cpu().to(a.dtype)):
            names.add(n)
    return names


def declared_trainable(target: AuditTarget, name: str) -> bool:
    """Whether the target declares ``name`` a CLIP tensor that trains by design."""
    if name == "logit_scale" and getattr(target.model, "trains_logit_scale", False):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in target.trainable_clip)


def optimizer_holds(target: AuditTarget, problems: list, evidence: list, warnings: list) -> str:
    """What the run's optimiser holds against the trainable set; frozen tensors it holds are stepped
    :data:`OPTIMIZER_STEPS` times on a fresh copy: a WARN while they stay put, a FAIL if they move."""
    model = copy_model(target.model).train()
    opt = target.make_optimizer(model)
    mine = dict(model.named_parameters())
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    want = {id(p) for n, p in mine.items() if p.requires_grad}
    names = {id(p): n for n, p in mine.items()}
    extra, missing = sorted(names.get(i, "?") for i in held - want), sorted(names[i] for i in want - held)
    note = f"training optimiser {type(opt).__name__}: holds {len(held)} tensors, trainable {len(want)}"
    if missing:
        problems.append(f"the optimiser misses {len(missing)} trainable tensor(s) (e.g. {missing[0]})")
    if extra:
        before = {n: mine[n].detach().clone() for n in extra if n in mine}
        x, y, _ = probe_batch(target, 4)
        losses = [_step(target, model, opt, x, y) for _ in range(OPTIMIZER_STEPS)]
        moved = [n for n, t in before.items() if not torch.equal(t, mine[n].detach())]
        evidence.append(f"the optimiser holds {len(extra)} tensor(s) that do not train (e.g. {extra[0]}); "
                        f"{OPTIMIZER_STEPS} of its steps (loss {' -> '.join(f'{v:.4f}' for v in losses)}) moved "
                        f"{len(moved)} of them")
        if moved:
            problems.append(f"the optimiser holds {len(extra)} frozen tensor(s) and its steps changed {len(moved)} "
                            f"(e.g. {moved[0]}: weight decay or momentum on a frozen tensor)")
        else:
            warnings.append(f"the optimiser holds {len(extra)} tensor(s) that do not train (e.g. {extra[0]}); "
                            f"{OPTIMIZER_STEPS} real steps left them unchanged: harmless, but build it from the "
                            f"trainable tensors only")
    return note


@audit(
    "gradient-flow",
    title="Gradients reach what trains; CLIP stays frozen",
    problem="the context gets no gradient (detached prompts, a no_grad text path), or CLIP's weights are "
            "left trainable and drift, or the optimiser holds a different set than the trainable one",
    fix="after one optimiser step every trainable tensor had a finite non-zero gradient and changed; every "
        "tensor of clean CLIP (matched by name and value) has no gradient and is bit-identical unless the target "
        "declares it trains (trainable_clip); no frozen parameter changed; the optimiser holds the trainable set",
    remediation="freeze CLIP with clip_model.requires_grad_(False) (and the text encoder's modules); build "
                "the optimiser from [p for p in model.parameters() if p.requires_grad]; do not detach the "
                "prompts or wrap the text encoder in torch.no_grad() while training; if CLIP tensors train by "
                "design (fine-tuning), declare AuditTarget(trainable_clip=['text_encoder.*'])",
    needs=("loss",),
)
def gradient_flow(target: AuditTarget) -> Outcome:
    """One SGD step of the training loss on a copy; inspect gradients and changes of every tensor."""
    clip_names = clip_param_names(target, dict(target.model.named_parameters()))  # the original shares CLIP's tensors
    model = copy_model(target.model).train()
    named = dict(model.named_parameters())
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    location = locate(type(target.model).__init__, r"requires_grad") or locate(type(target.model))
    if not trainable:
        return Outcome(Status.FAIL, "no parameter requires grad: nothing would train",
                       {"trainable_tensors": 0}, [], location)
    buffers = dict(model.named_buffers())
    before = {n: t.detach().clone() for n, t in list(named.items()) + list(buffers.items())}
    x, y, _ = probe_batch(target, 4)
    opt = torch.optim.SGD(list(trainable.values()), lr=PROBE_LR)
    losses = [_step(target, model, opt, x, y)]
    zero = [n for n, p in trainable.items() if p.grad is None or not bool((p.grad != 0).any())]
    grads = {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in trainable.items()}
    evidence = []
    if zero:  # a zero-initialised residual branch (our temporal module) feeds its inputs from step 2 on
        evidence.append(f"{len(zero)} trainable tensor(s) had an all-zero gradient at step 1 (e.g. {zero[0]}): "
                        f"took a second step")
        losses.append(_step(target, model, opt, x, y))
        zero = [n for n in zero if trainable[n].grad is None or not bool((trainable[n].grad != 0).any())]
    problems, warnings = [], []
    bad_grad = [n for n, g in grads.items() if g is not None and not bool(torch.isfinite(g).all())]
    no_grad = [n for n, g in grads.items() if g is None]
    unchanged = [n for n, p in trainable.items() if torch.equal(before[n], p.detach())]
    declared = {n for n in clip_names if declared_trainable(target, n)}
    clip_trainable = sorted((set(trainable) & clip_names) - declared)
    frozen = {n: t for n, t in named.items() if n not in trainable}
    frozen_grad = [n for n, t in frozen.items() if t.grad is not None]
    frozen_changed = [n for n, t in frozen.items() if not torch.equal(before[n], t.detach())]
    updated = [n for n, t in buffers.items() if not torch.equal(before[n], t.detach())]
    clip_changed = [n for n in clip_names - declared if not torch.equal(before[n], named[n].detach())]
    if clip_trainable:
        problems.append(f"{len(clip_trainable)} CLIP tensor(s) are trainable (e.g. {clip_trainable[0]}) "
                        f"and {len(clip_changed)} changed in one step")
    if no_grad:
        problems.append(f"{len(no_grad)} trainable tensor(s) got no gradient (e.g. {no_grad[0]})")
    if zero:
        problems.append(f"{len(zero)} trainable tensor(s) got only zero gradients (e.g. {zero[0]})")
    if bad_grad:
        problems.append(f"{len(bad_grad)} trainable tensor(s) got NaN/inf gradients (e.g. {bad_grad[0]})")
    if unchanged and not (no_grad or zero):
        problems.append(f"{len(unchanged)} trainable tensor(s) did not change (e.g. {unchanged[0]})")
    if frozen_grad or frozen_changed:
        problems.append(f"frozen tensors with a gradient: {len(frozen_grad)}, changed: {len(frozen_changed)}"
                        f" (e.g. {(frozen_grad + frozen_changed)[0]})")
    if not all(torch.isfinite(torch.tensor(losses))):
        problems.append(f"the loss is not finite: {losses}")
    opt_note = "the step used SGD over the trainable set (the target names no optimiser)"
    if target.make_optimizer is not None:
        opt_note = optimizer_holds(target, problems, evidence, warnings)
    n_train = sum(p.numel() for p in trainable.values())
    ours = [n for n in trainable if n not in clip_names]
    evidence = [f"loss {' -> '.join(f'{v:.4f}' for v in losses)} (SGD lr {PROBE_LR}, batch {len(y)}, the training loss "
                f"{'the target declares' if target.loss is not None else 'cross-entropy of the logits'})",
                f"trainable: {len(trainable)} tensors, {n_train} values: {', '.join(list(trainable)[:4])}"
                + (" ..." if len(trainable) > 4 else ""),
                "grad norms: " + ", ".join(f"{n} {float(g.norm()):.2e}" for n, g in list(grads.items())[:4] if g is not None),
                f"CLIP's tensors: {len(clip_names)} of the model's, matched by name and value against the suite's clean "
                f"CLIP; {len(declared)} declared trainable (trainable_clip); the model's own trainable: {len(ours)}",
                f"frozen: {len(frozen)} parameters, {len(frozen_grad)} with a gradient, {len(frozen_changed)} changed",
                opt_note] + evidence
    if updated:
        evidence.append(f"{len(updated)} buffer(s) updated by the training forward by design (e.g. {updated[0]}: "
                        f"running statistics), not by the step")
    metrics = {"trainable_tensors": len(trainable), "trainable_values": n_train, "frozen_tensors": len(frozen),
               "clip_tensors": len(clip_names), "clip_trainable": len(clip_trainable), "clip_declared_trainable": len(declared),
               "frozen_changed": len(frozen_changed) + len(clip_changed), "buffers_updated": len(updated),
               "steps": len(losses)}
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location)
    if warnings:
        return Outcome(Status.WARN, "; ".join(warnings), metrics, evidence, location)
    return Outcome(Status.PASS, f"{len(trainable)} trainable tensor(s) got finite non-zero gradients and changed; "
                   f"{len(frozen)} frozen tensors untouched", metrics, evidence, location)
