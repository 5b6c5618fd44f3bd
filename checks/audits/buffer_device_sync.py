"""buffer-device-sync: ``model.to(device)`` really moves everything the forward needs."""
from __future__ import annotations

import torch
from torch import nn

from ..core import AuditTarget, Outcome, Status, audit, device_note, foreign_device
from ..locations import locate
from ..models import copy_model
from ..text import prompt_learner

LAYOUT_BUFFERS = ("tokenized_prompts", "token_prefix", "token_suffix")
_MODULE_DICTS = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}


def plain_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Tensors a module holds as plain attributes (also inside lists, tuples, dicts):
    ``.to(device)`` does not move them."""
    found = []

    def walk(value, name, depth):
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            found.append((name, value))
        elif depth < 3 and isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]", depth + 1)
        elif depth < 3 and isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}[{k!r}]", depth + 1)

    for mod_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr not in _MODULE_DICTS and not attr.startswith("_forward") and not attr.startswith("_backward"):
                walk(value, f"{mod_name + '.' if mod_name else ''}{attr}", 0)
    return found


@audit(
    "buffer-device-sync",
    title="Buffers follow model.to(device)",
    problem="tokenized_prompts (CoOp keeps it as a plain attribute) stays on the CPU after model.to(device); "
            "the text encoder then indexes device tensors with CPU ids",
    fix="tokenized_prompts, token_prefix and token_suffix are registered buffers; no module holds a plain tensor",
    remediation="register every tensor the forward reads with self.register_buffer(name, tensor) "
                "(persistent=False for derived ones) instead of assigning self.name = tensor",
)
def buffer_device_sync(target: AuditTarget) -> Outcome:
    """Move a copy of the model to the foreign device and look where every tensor went."""
    pl = prompt_learner(target)
    device = foreign_device()
    registered = dict(pl.named_buffers(recurse=False))
    missing = [b for b in LAYOUT_BUFFERS if b not in registered]
    model = copy_model(target.model).to(device)
    stranded = [f"{n} on {t.device}" for n, t in list(model.named_parameters()) + list(model.named_buffers())
                if t.device.type != device.type]
    plain = plain_tensors(model)
    evidence = [f"moved a copy with .to({device.type}); device: {device_note(device)}"]
    for b in LAYOUT_BUFFERS:
        t = registered.get(b)
        where = dict(model.prompt_learner.named_buffers(recurse=False)).get(b)
        state = (f"registered buffer {list(t.shape)}, now on {where.device.type}" if t is not None
                 else "NOT a registered buffer" + (f" (plain attribute on {getattr(model.prompt_learner, b).device})"
                                                   if isinstance(getattr(model.prompt_learner, b, None), torch.Tensor) else ""))
        evidence.append(f"prompt_learner.{b}: {state}")
    evidence += [f"plain tensor attribute: {n} {list(t.shape)} on {t.device} (not moved)" for n, t in plain]
    evidence += [f"not moved: {s}" for s in stranded]
    n_tensors = sum(1 for _ in model.parameters()) + sum(1 for _ in model.buffers())
    metrics = {"tensors_checked": n_tensors, "not_moved": len(stranded), "plain_tensor_attributes": len(plain),
               "layout_buffers_missing": len(missing), "device": device.type}
    location = locate(type(pl).__init__, r"register_buffer\(\s*.tokenized_prompts|tokenized_prompts\s*=") or locate(type(pl))
    problems = []
    if missing:
        problems.append(f"{', '.join('prompt_learner.' + m for m in missing)} not registered as buffers")
    if plain:
        problems.append(f"{len(plain)} plain tensor attribute(s) left behind by .to({device.type}): "
                        f"{', '.join(n for n, _ in plain[:3])}")
    if stranded:
        problems.append(f"{len(stranded)} parameter/buffer(s) not on {device.type} after .to()")
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location)
    return Outcome(Status.PASS, f"all {n_tensors} parameters and buffers on {device.type} after .to(); "
                   f"layout buffers registered; no plain tensor attributes", metrics, evidence, location)
