"""index-device-consistency: every tensor reaching a submodule is on the model's device."""
from __future__ import annotations

import torch

from ..core import AuditTarget, Outcome, Status, audit, device_note, foreign_device
from ..inputs import probe_batch
from ..models import run_model
from ..text import text_location
from ..trace import foreign_run


@audit(
    "index-device-consistency",
    title="Every tensor in the forward is on the model's device",
    problem="the EOT indices (or any index tensor) are made on the CPU while the hidden states are on the "
            "GPU: a device-mismatch error, or a silent copy and sync on every step",
    fix="indices come from tokenized_prompts, a buffer on the model's device; nothing in the forward "
        "moves a tensor to the CPU",
    remediation="build index tensors from a buffer (tokenized_prompts.argmax(-1)) or with "
                "device=x.device; drop .cpu()/.to('cpu') from the forward",
    needs=("forward",),
)
def index_device_consistency(target: AuditTarget) -> Outcome:
    """Forward on the foreign device (and on meta too when that is CUDA), tracing each submodule's inputs."""
    devices = [foreign_device()]
    if devices[0].type != "meta":
        devices.append(torch.device("meta"))  # meta also proves the path needs no data on the host
    evidence, problems, metrics, runs, partial, cpu_index = [], [], {}, {}, [], []
    location = text_location(target, r"argmax|eot|index")
    for device in devices:
        run = foreign_run(target, device)
        runs[device.type] = {"moved": run.moved, "path": run.trace.path(), "error": run.error, "paths": run.paths}
        reached = [c for c in run.trace.calls if c.module == "text_encoder"]
        evidence.append(f"{device.type}: device {device_note(device)}")
        if reached:
            evidence.append(f"{device.type}: text_encoder received " + ", ".join(f"{a} {d}" for a, d in reached[0].inputs))
        evidence += [f"{device.type}: {p}" for p in run.paths]
        evidence.append(f"{device.type}: {len(run.trace.calls)} submodule calls and {run.host.ops} torch ops traced "
                        f"({run.trace.tensors_seen} + {run.host.op_tensors} tensor inputs checked; the ops include what "
                        f"module hooks cannot see, such as a functional attention)")
        evidence += [f"{device.type}: wrong device: {m}" for m in run.trace.mismatches]
        moves = run.host.of_kind("move")
        evidence += [f"{device.type}: {e.op} at {e.site}" for e in moves]
        mixes = run.host.of_kind("mix")
        evidence += [f"{device.type}: {e.op} at {e.site}" for e in mixes]
        reads = run.host.of_kind("read")
        if reads:
            evidence.append(f"{device.type}: {len(reads)} host read(s) answered with placeholders (see host-sync)")
        metrics[f"{device.type}_tensors_checked"] = run.trace.tensors_seen
        metrics[f"{device.type}_mismatches"] = len(run.trace.mismatches)
        metrics[f"{device.type}_cpu_copies"] = len(moves)
        if moves:
            location = moves[0].site.split(" ")[0]
            problems.append(f"the forward copies a tensor to the CPU on {device.type} ({moves[0].op} at {moves[0].site})")
        metrics[f"{device.type}_cpu_tensor_ops"] = len(mixes)
        if mixes and not moves:
            location = mixes[0].site.split(" ")[0]
        # PyTorch accepts CPU index tensors into device tensors (CoOp's own
        # x[torch.arange(n), eot] runs on CUDA): a hidden copy and sync each step, a WARN.
        # Any other op given a CPU tensor and a device tensor fails on CUDA.
        indexing = [e for e in mixes if e.op.startswith(("__getitem__", "__setitem__"))]
        other = [e for e in mixes if e not in indexing]
        if other:
            problems.append(f"CPU tensor meets {device.type} tensor at {other[0].site} ({other[0].op}; "
                            f"{len(other)} such op(s))")
        if indexing:
            cpu_index.append(f"a CPU index tensor indexes {device.type} states at {indexing[0].site} "
                           f"({len(indexing)} such op(s)): PyTorch copies it to the device each step (a hidden "
                           f"copy and sync on CUDA); make it with device=x.device or keep it in a buffer")
        if run.trace.mismatches:
            problems.append(f"{len(run.trace.mismatches)} tensor(s) reach submodules on the wrong device "
                            f"({run.trace.mismatches[0]})")
        if run.error:
            evidence.append(f"{device.type}: forward raised {run.error}" + (f" at {run.error_site}" if run.error_site else ""))
            if run.data_dependent and not moves:
                partial.append(f"the {device.type} forward stopped at an op with a data-dependent shape "
                               f"({run.error_site or run.error}): a host sync on CUDA (see host-sync), and the path "
                               f"after it was not traced; no device problem before it")
            elif not moves:
                cpu_forward(target)  # failing on the CPU too: the model's own bug (the runner reports it), not the device's
                problems.append(f"the forward fails on {device.type}: {run.error}")
        else:
            evidence.append(f"{device.type}: forward completed -> logits {run.output}")
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems), metrics, evidence, location, {"runs": runs})
    if cpu_index or (partial and devices[0].type == "meta"):
        return Outcome(Status.WARN, (cpu_index + partial)[0], metrics, evidence, location, {"runs": runs})
    return Outcome(Status.PASS, "every tensor reaching every submodule was on the model's device "
                   f"({', '.join(d.type for d in devices)}); no copy to the CPU", metrics, evidence, location,
                   {"runs": runs})


def cpu_forward(target: AuditTarget) -> None:
    """The forward on the model's own device, on the same inputs; raises what the model raises."""
    run_model(target, probe_batch(target, 2)[0])
