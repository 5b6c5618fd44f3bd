"""optimizer-step: a few steps of the run's own optimiser, in the model's own precision, keep everything finite."""
from __future__ import annotations

import torch

from .. import contract
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import training_batch
from ..locations import locate
from ..models import copy_model

STEPS = 3
HALF = (torch.float16, torch.bfloat16)
#: FAIL when the declared training step keeps half-precision weights and its first step leaves more than this
#: share of the values the optimiser updates (on an fp32 copy) at their old value. fp32 weights and fp32 master
#: weights lose none (0.0); ActionCLIP's fp16 step with AdamW at lr 5e-6 loses 0.998 of the zoo's tiny text tower's
#: updated values, a bf16 head stepped as is 0.02 (docs/studies/beyond_one_prompt.txt); the issue reports 0.42 of a
#: random ViT-B-32 text tower's.
LOST_SHARE_FAIL = 0.01
SEED = 0


def _settings(opt: torch.optim.Optimizer) -> str:
    group = opt.param_groups[0]
    keys = [k for k in ("lr", "momentum", "betas", "eps", "weight_decay") if k in group]
    return ", ".join(f"{k} {group[k]:g}" if isinstance(group[k], float) else f"{k} {group[k]}" for k in keys)


def _nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t.detach())).sum())


@audit(
    "optimizer-step",
    title="A few real optimiser steps keep every trainable tensor finite, and no update rounds away",
    problem="CoOp trains in fp16 (CLIP and context in half precision) and users swap its SGD for Adam/AdamW: "
            "Adam's eps (1e-8) is 0 in fp16 and small squared gradients underflow, so the first step turns the "
            "context inf and the next NaN; gradient-flow's single SGD step does not show it. A loop that converts "
            "fp16 weights to fp32 for optimizer.step() and back keeps no fp32 master weights: most updates of a small "
            "learning rate round back to the old fp16 value",
    fix="a few steps of the optimiser the run really uses (the train flags', or the target's factory), through the "
        "target's declared training step when it has one (its precision handling included), in the model's own "
        "precision on a copy: the loss and every trainable tensor stay finite, and the steps move them (a learning rate "
        "of 0 changes nothing); the share of the updates the first "
        "step loses to rounding, against the same step on an fp32 copy, is measured and is 0 with fp32 master weights",
    remediation="keep the trainable tensors in fp32 (fp32 master weights: the context fp32, CLIP in half, as "
                "--precision fp16 does), or use amp with a GradScaler; with Adam in half precision, a larger eps "
                "(1e-4) at least avoids the division by zero; never round the weights back to fp16 after the step",
    needs=("loss",),
)
def optimizer_step(target: AuditTarget) -> Outcome:
    """Take STEPS steps of the run's optimiser on a copy (through the declared training step when there is one);
    look for non-finite losses and tensors, and for the updates of the first step lost to rounding."""
    model, opt, how = _stepped_copy(target)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    declared = target.train_step is not None
    x, y, mask, data = training_batch(target)
    half = [f"{n} ({str(p.dtype).removeprefix('torch.')})" for n, p in trainable.items() if p.dtype in HALF]
    held = [p for g in opt.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in held]
    step_how = "the target's declared training step (train_step)" if declared else "zero_grad, loss, backward, step"
    evidence = [f"{STEPS} steps of {how} on a copy, at its configured learning rate (no schedule), each by {step_how}",
                f"batch: {data}", "trainable: " + ", ".join(f"{n} {str(p.dtype).removeprefix('torch.')}"
                                                            for n, p in list(trainable.items())[:4])
                + (" ..." if len(trainable) > 4 else "")]
    metrics = {"steps": STEPS, "optimizer": type(opt).__name__, "lr": opt.param_groups[0].get("lr"),
               "trainable_tensors": len(trainable), "half_precision_tensors": len(half), "declared_step": declared}
    pl = getattr(target.model, "prompt_learner", None)  # where the trainable context is made, else the model
    location = (locate(type(pl).__init__, r"nn\.Parameter\(") if pl is not None else None) or locate(type(target.model))
    if declared:
        location = locate(target.train_step) or location
    losses, after_first = [], None
    start = {n: p.detach().clone() for n, p in trainable.items()}
    for step in range(1, STEPS + 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED + step)  # the reference step draws what step 1 drew (a template per class)
            if declared:
                loss, bad_grad = contract.train_step(target, model, x, y, mask, opt).detach().float(), set()
            else:
                opt.zero_grad(set_to_none=True)
                loss = contract.loss(target, model, x, y, mask).float()
                if torch.isfinite(loss):
                    loss.backward()
                bad_grad = {n for n, p in trainable.items() if p.grad is not None and _nonfinite(p.grad)}
        losses.append(float(loss.detach()))
        metrics["losses"] = losses
        if not torch.isfinite(loss):
            evidence.append(f"loss by step: {', '.join(f'{v:.4g}' for v in losses)}")
            return Outcome(Status.FAIL, f"the loss turned {losses[-1]} at step {step} of {STEPS} ({how.split(' (')[0]})",
                           metrics, evidence, location)
        if not declared:
            opt.step()
        if step == 1:
            after_first = [p.detach().clone() for p in held]
            grads = [None if p.grad is None else p.grad.detach().clone() for p in held]
        bad = [(n, p) for n, p in trainable.items() if _nonfinite(p)]
        if bad:
            n, p = bad[0]
            values = p.detach()[~torch.isfinite(p.detach())]
            kind = "NaN" if bool(values.isnan().all()) else "inf" if bool(values.isinf().all()) else "inf/NaN"
            why = ("its gradient was already non-finite" if n in bad_grad else
                   f"its gradient was finite: the update overflowed (a {str(p.dtype).removeprefix('torch.')} tensor)"
                   if not declared else "after the declared training step")
            evidence += [f"loss by step: {', '.join(f'{v:.4g}' for v in losses)}",
                         f"after step {step}: " + ", ".join(f"{m} {_nonfinite(q)} of {q.numel()} non-finite"
                                                            for m, q in bad)]
            metrics["nonfinite_tensors"] = len(bad)
            return Outcome(Status.FAIL, f"step {step} of {STEPS} ({how.split(' (')[0]}, lr "
                           f"{opt.param_groups[0].get('lr'):g}) turned {n} {kind} ({_nonfinite(p)} of {p.numel()} values): "
                           f"{why}", metrics, evidence, location)
    evidence.append(f"loss by step: {', '.join(f'{v:.4g}' for v in losses)}; every trainable tensor finite after each")
    stepped = sorted({str(p.dtype).removeprefix("torch.") for p in held if p.dtype in HALF})
    share = None
    if stepped:  # the optimiser steps half-precision tensors: how many updates does rounding keep?
        measured = lost_share(opt, before, after_first, grads)
        if measured is None:
            evidence.append("the share of updates lost to rounding was not measured: the step left no gradients, or "
                            "the optimiser cannot be rebuilt from its settings")
        else:
            share, intended = measured
            metrics.update(lost_share=share, updated_values=intended)
            evidence.append(f"step 1 against the same optimiser stepped in fp32 from the same values with the same "
                            f"gradients (fp32 master weights): of the {intended} values it updates, {share:.1%} kept "
                            f"their old {'/'.join(stepped)} value here")
    else:
        evidence.append("the optimiser steps fp32 tensors only: no update rounds to half precision")
    if share is not None and declared and share > LOST_SHARE_FAIL:
        return Outcome(Status.FAIL, f"the declared training step keeps {'/'.join(stepped)} weights without fp32 master "
                       f"weights: step 1 left {share:.1%} of the values the optimiser updates at their old value (the "
                       f"updates rounded away; {how.split(' (')[0]}, lr {opt.param_groups[0].get('lr'):g})", metrics,
                       evidence, location)
    moved = [n for n, p in trainable.items() if not torch.equal(p.detach(), start[n])]
    metrics["moved_tensors"] = len(moved)
    if not moved:  # finite, and useless: a learning rate of 0, or an optimiser over other tensors
        lrs = sorted({g.get("lr") for g in opt.param_groups})
        return Outcome(Status.FAIL, f"{STEPS} steps of {how.split(' (')[0]} (lr {', '.join(f'{v:g}' for v in lrs)}) "
                       f"changed no trainable tensor: loss {' -> '.join(f'{v:.4g}' for v in losses)}"
                       + (": the learning rate is 0" if all(not v for v in lrs) else ""), metrics, evidence, location)
    if stepped or (half and not declared):  # a declared step whose optimiser holds fp32 masters keeps every update
        lost = f"; step 1 left {share:.1%} of the updated values unchanged" if share is not None else ""
        if not declared:
            evidence.append("the audit stepped the half-precision tensors as they are: declare AuditTarget(train_step="
                            "...) to judge your loop's own precision handling (a FAIL when it keeps no fp32 master "
                            "weights and updates round away)")
        return Outcome(Status.WARN, f"{len(half or stepped)} trainable tensor(s) in half precision "
                       f"({(half or stepped)[0]}): finite for {STEPS} steps here, but updates round away and Adam's eps "
                       f"is 0 in fp16{lost}; keep fp32 master weights", metrics, evidence, location)
    return Outcome(Status.PASS, f"{STEPS} steps of {how.split(' (')[0]} (lr {opt.param_groups[0].get('lr'):g}): loss "
                   f"{' -> '.join(f'{v:.4g}' for v in losses)}, every trainable tensor finite", metrics, evidence,
                   location)


def _stepped_copy(target: AuditTarget):
    """``(a copy in training mode, the run's optimiser over it, how it was made)``."""
    model = copy_model(target.model).train()
    if isinstance(getattr(model, "text_encoder", None), torch.nn.Module):
        model.text_encoder.eval()  # frozen CLIP runs without dropout, as train_one_epoch runs it
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise Skip("no parameter requires grad: nothing to step (gradient-flow reports it)")
    if target.make_optimizer is not None:
        opt = target.make_optimizer(model)
        return model, opt, f"the run's optimiser {type(opt).__name__} ({_settings(opt)})"
    opt = torch.optim.AdamW(trainable)
    return model, opt, (f"AdamW with its default settings ({_settings(opt)}): the target names no optimiser "
                        f"(AuditTarget.make_optimizer)")


def lost_share(opt: torch.optim.Optimizer, before: list, after: list, grads: list) -> tuple[float, int] | None:
    """``(share, values)``: of the values the run's optimiser, stepped once in fp32 from the same values with the
    same gradients (fp32 master weights), updates, the share the audited step (``before`` -> ``after``, the
    optimiser's tensors in order) left at their old value. None when the step left no gradients to replay or
    the optimiser cannot be rebuilt from its settings."""
    if any(g is None for g in grads):
        return None
    masters = [b.float().clone().requires_grad_(True) for b in before]
    for m, g in zip(masters, grads):
        m.grad = g.float().to(m.device)
    groups, at = [], 0
    for group in opt.param_groups:
        n = len(group["params"])
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": masters[at:at + n]})
        at += n
    try:
        type(opt)(groups).step()
    except Exception:  # noqa: BLE001: an optimiser that cannot be rebuilt from its settings: not measured
        return None
    lost = intended = 0
    for b, a, m in zip(before, after, masters):
        meant = m.detach() != b.float()  # the fp32 step moved it
        kept = a != b
        intended += int(meant.sum())
        lost += int((meant & ~kept.to(meant.device)).sum())
    return (lost / intended if intended else 0.0), intended
