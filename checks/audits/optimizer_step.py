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


def _settings(opt: torch.optim.Optimizer) -> str:
    group = opt.param_groups[0]
    keys = [k for k in ("lr", "momentum", "betas", "eps", "weight_decay") if k in group]
    return ", ".join(f"{k} {group[k]:g}" if isinstance(group[k], float) else f"{k} {group[k]}" for k in keys)


def _nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t.detach())).sum())


@audit(
    "optimizer-step",
    title="A few real optimiser steps keep every trainable tensor finite",
    problem="CoOp trains in fp16 (CLIP and context in half precision) and users swap its SGD for Adam/AdamW: "
            "Adam's eps (1e-8) is 0 in fp16 and small squared gradients underflow, so the first step turns the "
            "context inf and the next NaN; gradient-flow's single SGD step does not show it",
    fix="a few steps of the optimiser the run really uses (the train flags', or the target's factory), in the "
        "model's own precision on a copy: the loss and every trainable tensor stay finite, and the steps move them "
        "(a learning rate of 0 changes nothing); half-precision trainable tensors are flagged even then",
    remediation="keep the trainable tensors in fp32 (fp32 master weights: the context fp32, CLIP in half, as "
                "--precision fp16 does), or use amp with a GradScaler; with Adam in half precision, a larger eps "
                "(1e-4) at least avoids the division by zero",
    needs=("loss",),
)
def optimizer_step(target: AuditTarget) -> Outcome:
    """Take STEPS steps of the run's optimiser on a copy; look for non-finite losses and tensors."""
    model = copy_model(target.model).train()
    if isinstance(getattr(model, "text_encoder", None), torch.nn.Module):
        model.text_encoder.eval()  # frozen CLIP runs without dropout, as train_one_epoch runs it
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise Skip("no parameter requires grad: nothing to step (gradient-flow reports it)")
    if target.make_optimizer is not None:
        opt = target.make_optimizer(model)
        how = f"the run's optimiser {type(opt).__name__} ({_settings(opt)})"
    else:
        opt = torch.optim.AdamW(list(trainable.values()))
        how = (f"AdamW with its default settings ({_settings(opt)}): the target names no optimiser "
               f"(AuditTarget.make_optimizer)")
    x, y, mask, data = training_batch(target)
    half = [f"{n} ({str(p.dtype).removeprefix('torch.')})" for n, p in trainable.items() if p.dtype in HALF]
    evidence = [f"{STEPS} steps of {how} on a copy, at its configured learning rate (no schedule)",
                f"batch: {data}", "trainable: " + ", ".join(f"{n} {str(p.dtype).removeprefix('torch.')}"
                                                            for n, p in list(trainable.items())[:4])
                + (" ..." if len(trainable) > 4 else "")]
    metrics = {"steps": STEPS, "optimizer": type(opt).__name__, "lr": opt.param_groups[0].get("lr"),
               "trainable_tensors": len(trainable), "half_precision_tensors": len(half)}
    pl = getattr(target.model, "prompt_learner", None)  # where the trainable context is made, else the model
    location = (locate(type(pl).__init__, r"nn\.Parameter\(") if pl is not None else None) or locate(type(target.model))
    losses, before = [], {n: p.detach().clone() for n, p in trainable.items()}
    for step in range(1, STEPS + 1):
        opt.zero_grad(set_to_none=True)
        loss = contract.loss(target, model, x, y, mask).float()
        losses.append(float(loss.detach()))
        metrics["losses"] = losses
        if not torch.isfinite(loss):
            evidence.append(f"loss by step: {', '.join(f'{v:.4g}' for v in losses)}")
            return Outcome(Status.FAIL, f"the loss turned {losses[-1]} at step {step} of {STEPS} ({how.split(' (')[0]})",
                           metrics, evidence, location)
        loss.backward()
        bad_grad = {n for n, p in trainable.items() if p.grad is not None and _nonfinite(p.grad)}
        opt.step()
        bad = [(n, p) for n, p in trainable.items() if _nonfinite(p)]
        if bad:
            n, p = bad[0]
            values = p.detach()[~torch.isfinite(p.detach())]
            kind = "NaN" if bool(values.isnan().all()) else "inf" if bool(values.isinf().all()) else "inf/NaN"
            why = ("its gradient was already non-finite" if n in bad_grad else
                   f"its gradient was finite: the update overflowed (a {str(p.dtype).removeprefix('torch.')} tensor)")
            evidence += [f"loss by step: {', '.join(f'{v:.4g}' for v in losses)}",
                         f"after step {step}: " + ", ".join(f"{m} {_nonfinite(q)} of {q.numel()} non-finite"
                                                            for m, q in bad)]
            metrics["nonfinite_tensors"] = len(bad)
            return Outcome(Status.FAIL, f"step {step} of {STEPS} ({how.split(' (')[0]}, lr "
                           f"{opt.param_groups[0].get('lr'):g}) turned {n} {kind} ({_nonfinite(p)} of {p.numel()} values): "
                           f"{why}", metrics, evidence, location)
    evidence.append(f"loss by step: {', '.join(f'{v:.4g}' for v in losses)}; every trainable tensor finite after each")
    moved = [n for n, p in trainable.items() if not torch.equal(p.detach(), before[n])]
    metrics["moved_tensors"] = len(moved)
    if not moved:  # finite, and useless: a learning rate of 0, or an optimiser over other tensors
        lrs = sorted({g.get("lr") for g in opt.param_groups})
        return Outcome(Status.FAIL, f"{STEPS} steps of {how.split(' (')[0]} (lr {', '.join(f'{v:g}' for v in lrs)}) "
                       f"changed no trainable tensor: loss {' -> '.join(f'{v:.4g}' for v in losses)}"
                       + (": the learning rate is 0" if all(not v for v in lrs) else ""), metrics, evidence, location)
    if half:
        return Outcome(Status.WARN, f"{len(half)} trainable tensor(s) in half precision ({half[0]}): finite for "
                       f"{STEPS} steps here, but updates round away and Adam's eps is 0 in fp16; keep fp32 master "
                       f"weights", metrics, evidence, location)
    return Outcome(Status.PASS, f"{STEPS} steps of {how.split(' (')[0]} (lr {opt.param_groups[0].get('lr'):g}): loss "
                   f"{' -> '.join(f'{v:.4g}' for v in losses)}, every trainable tensor finite", metrics, evidence,
                   location)
