"""gradient-flow: one real optimiser step trains the context and nothing of CLIP."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import sample_batch
from ..locations import locate
from ..models import clip_param_names, copy_model

#: Learning rate of the probe step: large enough that every non-zero gradient moves its
#: tensor by more than float rounding.
PROBE_LR = 0.1


def _step(model, params, x, y) -> float:
    opt = torch.optim.SGD(params, lr=PROBE_LR)
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


@audit(
    "gradient-flow",
    title="Gradients reach the context; CLIP stays frozen",
    problem="the context gets no gradient (detached prompts, a no_grad text path), or CLIP's weights are "
            "left trainable and drift, or the optimiser holds a different set than the trainable one",
    fix="after one optimiser step every trainable tensor had a finite non-zero gradient and changed; every "
        "CLIP tensor has no gradient and is bit-identical; the optimiser holds exactly the trainable set",
    remediation="freeze CLIP with clip_model.requires_grad_(False) (and the text encoder's modules); build "
                "the optimiser from [p for p in model.parameters() if p.requires_grad]; do not detach the "
                "prompts or wrap the text encoder in torch.no_grad() while training",
)
def gradient_flow(target: AuditTarget) -> Outcome:
    """One SGD step on a copy; inspect gradients and changes of every tensor."""
    clip_names = clip_param_names(target)
    model = copy_model(target.model).train()
    named = dict(model.named_parameters())
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    location = locate(type(target.model).__init__, r"requires_grad") or locate(type(target.model))
    if not trainable:
        return Outcome(Status.FAIL, "no parameter requires grad: nothing would train",
                       {"trainable_tensors": 0}, [], location)
    before = {n: t.detach().clone() for n, t in list(named.items()) + list(model.named_buffers())}
    x, y = sample_batch(target)
    losses = [_step(model, list(trainable.values()), x, y)]
    zero = [n for n, p in trainable.items() if p.grad is None or not bool((p.grad != 0).any())]
    grads = {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in trainable.items()}
    evidence = []
    if zero:  # a zero-initialised residual branch (our temporal module) feeds its inputs from step 2 on
        evidence.append(f"{len(zero)} trainable tensor(s) had an all-zero gradient at step 1 (e.g. {zero[0]}): "
                        f"took a second step")
        losses.append(_step(model, list(trainable.values()), x, y))
        zero = [n for n in zero if trainable[n].grad is None or not bool((trainable[n].grad != 0).any())]
    problems = []
    bad_grad = [n for n, g in grads.items() if g is not None and not bool(torch.isfinite(g).all())]
    no_grad = [n for n, g in grads.items() if g is None]
    unchanged = [n for n, p in trainable.items() if torch.equal(before[n], p.detach())]
    clip_trainable = sorted(set(trainable) & clip_names)
    frozen = {n: t for n, t in list(named.items()) + list(model.named_buffers()) if n not in trainable}
    frozen_grad = [n for n, t in frozen.items() if getattr(t, "grad", None) is not None]
    frozen_changed = [n for n, t in frozen.items() if not torch.equal(before[n], t.detach())]
    clip_changed = [n for n in named if n in clip_names and not torch.equal(before[n], named[n].detach())]
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
        opt = target.make_optimizer(model)
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        want = {id(p) for p in trainable.values()}
        names = {id(p): n for n, p in named.items()}
        extra, missing = sorted(names.get(i, "?") for i in held - want), sorted(names[i] for i in want - held)
        opt_note = f"training optimiser {type(opt).__name__}: holds {len(held)} tensors, trainable {len(want)}"
        if extra or missing:
            problems.append(f"the optimiser holds {len(extra)} non-trainable and misses {len(missing)} trainable "
                            f"tensor(s) (e.g. {(extra + missing)[0]})")
    n_train = sum(p.numel() for p in trainable.values())
    evidence = [f"loss {' -> '.join(f'{v:.4f}' for v in losses)} (SGD lr {PROBE_LR}, batch {len(y)})",
                f"trainable: {len(trainable)} tensors, {n_train} values: {', '.join(list(trainable)[:4])}"
                + (" ..." if len(trainable) > 4 else ""),
                "grad norms: " + ", ".join(f"{n} {float(g.norm()):.2e}" for n, g in list(grads.items())[:4] if g is not None),
                f"frozen: {len(frozen)} tensors ({len(clip_names)} of them CLIP's), {len(frozen_grad)} with a gradient, "
                f"{len(frozen_changed)} changed", opt_note] + evidence
    metrics = {"trainable_tensors": len(trainable), "trainable_values": n_train, "frozen_tensors": len(frozen),
               "clip_trainable": len(clip_trainable), "frozen_changed": len(frozen_changed) + len(clip_changed),
               "steps": len(losses)}
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location)
    return Outcome(Status.PASS, f"{len(trainable)} trainable tensor(s) got finite non-zero gradients and changed; "
                   f"{len(frozen)} frozen tensors untouched", metrics, evidence, location)
