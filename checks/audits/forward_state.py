"""forward-state: what a forward leaves behind (a cache, a module mode) does not break the next forward."""
from __future__ import annotations

import traceback

import torch
from torch import nn

from .. import contract
from ..core import AuditTarget, Outcome, Status, audit, device_note, foreign_device
from ..inputs import probe_batch
from ..locations import locate, relpath
from ..models import copy_model, handed_over
from ..trace import HostRecorder, HostWatch, audited_code, placed
from .buffer_device_sync import plain_tensors

#: Videos in the probe batch.
BATCH = 2


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name or "model": m.training for name, m in model.named_modules()}


def _flipped(before: dict[str, bool], model: nn.Module) -> list[str]:
    after = _modes(model)
    return [n for n, training in before.items() if after.get(n) != training]


def _forward_in(target: AuditTarget, model: nn.Module, mode: str, x, y) -> tuple[list[str], str]:
    """Every module's mode before and after one forward in ``mode``: ``(modules whose flag changed, how it ran)``;
    in training mode the training loss (the forward as training runs it: labels, a loss), not compared when the
    target gives none (gradient-flow says what to declare)."""
    model.train(mode == "training")
    before = _modes(model)
    if mode == "training" and contract.unmet(target, "loss"):
        return [], "not run: the target gives no training loss (see gradient-flow)"
    with torch.no_grad():
        if mode == "training":
            contract.loss(target, model, x, y)
            return _flipped(before, model), "the training loss"
        contract.logits(target, model, x)
    return _flipped(before, model), "the forward"


@audit(
    "forward-state",
    title="A forward leaves nothing behind that breaks the next",
    problem="state the first forward makes is not what the next forward needs: a text-feature cache held as a "
            "plain attribute stays on the CPU when the model moves (.to() moves parameters and buffers only), and "
            "self.eval() ... self.train() inside the forward leaves a model the caller put in eval mode training "
            "(dropout on, batch statistics used) from the next forward on",
    fix="after a forward on the model's own device, a copy moved to the foreign device runs its forward there "
        "without reading any tensor the first forward made on the CPU; every module's train/eval flag is the "
        "same after a forward as before it, in eval and in training mode",
    remediation="keep a cache as a buffer (self.register_buffer('text_cache', t, persistent=False)) and drop it "
                "when the class list changes, or recompute it; never call self.eval()/self.train() inside forward: "
                "run a frozen part under torch.no_grad() and leave the modes to the caller",
    needs=("forward",),
)
def forward_state(target: AuditTarget) -> Outcome:
    """A forward in each mode on a copy (modes compared), then the copy moved and run again, watched."""
    device = foreign_device()
    model = copy_model(handed_over(target))  # before any forward of the audits' own
    held = {id(t) for _, t in plain_tensors(model)}
    buffers = set(dict(model.named_buffers()))
    x, y, _ = probe_batch(target, BATCH)
    evidence, problems = [], []
    train_flips, train_how = _forward_in(target, model, "training", x, y)
    recorder = HostRecorder()  # the host reads of the eval forward answer those of the meta one
    with recorder:
        eval_flips, eval_how = _forward_in(target, model, "eval", x, y)
    for mode, flips, how in (("eval", eval_flips, eval_how), ("training", train_flips, train_how)):
        evidence.append(f"{mode} mode: {how} of {BATCH} videos; {len(flips)} of {len(_modes(model))} modules changed "
                        f"their train/eval flag" + (f" (e.g. {', '.join(flips[:3])})" if flips else ""))
    if eval_flips:
        problems.append(f"after model.eval() and one forward, {len(eval_flips)} module(s) are in training mode "
                        f"(e.g. {eval_flips[0]}): the forward switches modes (self.eval() ... self.train())")
    if train_flips:
        problems.append(f"after model.train() and one forward, {len(train_flips)} module(s) are in eval mode "
                        f"(e.g. {train_flips[0]}): the forward switches modes")
    made = [(n, t) for n, t in plain_tensors(model) if id(t) not in held]
    new_buffers = sorted(set(dict(model.named_buffers())) - buffers)
    evidence += [f"made by the forward: {n} {placed(t)}, a plain tensor attribute (.to() does not move it)"
                 for n, t in made]
    evidence += [f"made by the forward: buffer {n} (moves with .to())" for n in new_buffers]
    model.to(device).eval()
    watch = HostWatch(answers=recorder.answers)
    error = None
    try:
        with torch.no_grad(), watch:
            contract.logits(target, model, probe_batch(target, BATCH, device=device)[0])
    except Exception as e:  # noqa: BLE001: a forward broken by what the first one left is the finding
        error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        frames = [f for f in traceback.extract_tb(e.__traceback__) if audited_code(f.filename)]
        if frames:
            error += f" at {relpath(frames[-1].filename)}:{frames[-1].lineno}"
    made_ids = {id(t): n for n, t in made}
    stale = [(made_ids[tid], t, ops, site) for tid, (t, ops, site) in watch.cpu_reads.items() if tid in made_ids]
    evidence.append(f"then moved with .to({device.type}) and run again there ({device_note(device)})"
                    + (f": raised {error}" if error else ": completed"))
    evidence += [f"read on the CPU by the moved forward: {n} {placed(t)}, made by the first forward: {', '.join(ops)} "
                 f"at {site}" for n, t, ops, site in stale]
    if stale:
        n, t, ops, site = stale[0]
        problems.insert(0, f"{len(stale)} tensor(s) the first forward made stayed on the CPU after .to({device.type}) "
                        f"and the next forward read them there: {n} {placed(t)}, a plain attribute, read by "
                        f"{', '.join(ops)} at {site}")
    metrics = {"modules": len(_modes(model)), "eval_mode_flips": len(eval_flips), "train_mode_flips": len(train_flips),
               "tensors_made": len(made), "buffers_made": len(new_buffers), "stale_reads": len(stale),
               "device": device.type}
    location = (stale[0][3].split(" ")[0] if stale else None) or locate(type(target.model).forward)
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location)
    left = [n for n, t in made if t.device.type == "cpu"]
    if error and left:
        return Outcome(Status.WARN, f"the moved forward stopped ({error}) before it could be watched whole; the first "
                       f"forward left {len(left)} plain tensor(s) on the CPU it may read: {', '.join(left[:3])}",
                       metrics, evidence, location)
    tail = (f"; it made {len(made)} plain tensor(s) the moved forward did not read on the CPU" if made else
            "; it made no plain tensor")
    return Outcome(Status.PASS, f"a forward changes no module's mode (eval and training); after it the model moved "
                   f"to {device.type} ran without reading anything it left on the CPU{tail}", metrics, evidence, location)
