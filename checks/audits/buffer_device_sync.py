"""buffer-device-sync: every tensor the moved model's forward reads went with ``model.to(device)``."""
from __future__ import annotations

import torch
from torch import nn

from ..core import AuditTarget, Outcome, Status, audit, device_note, foreign_device
from ..locations import locate
from ..trace import foreign_run, placed

#: The CoOp layout's buffers, named in the evidence when the model has them (none is required).
LAYOUT_BUFFERS = ("tokenized_prompts", "token_prefix", "token_suffix")
_MODULE_DICTS = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}
#: Ops that copy a tensor to the device: a held CPU tensor read only by them is uploaded every forward.
_UPLOADS = frozenset({"to", "cuda"})


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


def held_tensors(model: nn.Module) -> dict[int, tuple[str, str]]:
    """``id -> (name, kind)`` of every tensor the model holds: parameters, buffers, plain attributes."""
    held = {id(t): (n, "a plain tensor attribute, which .to() does not move") for n, t in plain_tensors(model)}
    held.update({id(t): (n, "a buffer") for n, t in model.named_buffers()})
    held.update({id(t): (n, "a parameter") for n, t in model.named_parameters()})
    return held


@audit(
    "buffer-device-sync",
    title="Buffers follow model.to(device)",
    problem="tokenized_prompts (CoOp keeps it as a plain attribute) stays on the CPU after model.to(device); "
            "the text encoder then indexes device tensors with CPU ids",
    fix="every tensor the model holds that its forward reads on the moved copy is on the device, whatever it is "
        "called: parameters, buffers, and no plain tensor attribute left behind",
    remediation="register every tensor the forward reads with self.register_buffer(name, tensor) "
                "(persistent=False for derived ones) instead of assigning self.name = tensor; keep the result of "
                "tensor.to(device) (it returns a copy, the tensor itself does not move)",
    needs=("forward",),
)
def buffer_device_sync(target: AuditTarget) -> Outcome:
    """Move a copy to the foreign device, run its forward there, and name every tensor the model
    holds that an op read on the CPU."""
    device = foreign_device()
    run = foreign_run(target, device)
    model = run.model
    held = held_tensors(model)  # after the forward: attributes it set itself count too
    read, uploaded = [], []
    for tid, (t, ops, site) in run.host.cpu_reads.items():
        if tid not in held:
            continue
        name, kind = held[tid]
        line = f"{name} {placed(t)}, {kind}: read by {', '.join(ops)} at {site}"
        (uploaded if set(ops) <= _UPLOADS else read).append((name, line))
    plain = plain_tensors(model)
    stranded = [f"{n} on {t.device}" for n, t in list(model.named_parameters()) + list(model.named_buffers())
                if t.device.type != device.type]
    evidence = [f"moved a copy with .to({device.type}) and ran its forward there; device: {device_note(device)}"]
    pl = getattr(model, "prompt_learner", None)
    for b in LAYOUT_BUFFERS if pl is not None else ():
        t = getattr(pl, b, None)
        if isinstance(t, torch.Tensor):
            kind = "registered buffer" if b in dict(pl.named_buffers(recurse=False)) else "plain attribute"
            evidence.append(f"prompt_learner.{b}: {kind} {placed(t)}")
    evidence += [f"read on the CPU: {line}" for _, line in read]
    evidence += [f"copied to {device.type} in every forward: {line}" for _, line in uploaded]
    names_read = {n for n, _ in read + uploaded}
    evidence += [f"plain tensor attribute {n} {placed(t)}: not read by the forward" for n, t in plain if n not in names_read]
    evidence += [f"not moved: {s}" for s in stranded]
    if run.error:
        evidence.append(f"the forward on {device.type} raised {run.error}" + (f" at {run.error_site}" if run.error_site else ""))
    n_tensors = sum(1 for _ in model.parameters()) + sum(1 for _ in model.buffers())
    metrics = {"tensors_checked": n_tensors, "held_read_on_cpu": len(read), "uploaded_each_forward": len(uploaded),
               "plain_tensor_attributes": len(plain), "not_moved": len(stranded), "device": device.type}
    location = (locate(type(pl).__init__, r"register_buffer\(\s*.tokenized_prompts|tokenized_prompts\s*=")
                if pl is not None else None) or locate(type(target.model).__init__) or locate(type(target.model))
    if read:
        first = read[0][1]
        return Outcome(Status.FAIL, f"{len(read)} tensor(s) the model holds stayed on the CPU after .to({device.type}) "
                       f"and the forward read them there: {first}", metrics, evidence, first.rsplit(" at ", 1)[-1].split(" ")[0])
    if uploaded:
        return Outcome(Status.WARN, f"{len(uploaded)} tensor(s) the model holds stay on the CPU and are copied to "
                       f"{device.type} in every forward (a host-to-device copy per step): {uploaded[0][1]}",
                       metrics, evidence, location)
    if run.error and plain:
        return Outcome(Status.WARN, f"the forward on {device.type} stopped ({run.error}) before it could be watched "
                       f"whole; {len(plain)} plain tensor attribute(s) it may read: {', '.join(n for n, _ in plain[:3])}",
                       metrics, evidence, location)
    return Outcome(Status.PASS, f"all {n_tensors} parameters and buffers on {device.type} after .to(); the forward "
                   f"there read no tensor of the model's on the CPU", metrics, evidence, location)
