"""distributed-equivalence: G processes on a global batch compute what one process computes on it."""
from __future__ import annotations

import torch

from ..core import AuditTarget, Outcome, Skip, Status, audit, spawning_allowed
from ..distributed import run_worlds
from ..inputs import training_batch
from ..locations import locate

#: Processes compared with one.
WORLD = 2
#: Steps taken (gradients compared after each, the trainable tensors after the last).
STEPS = 2
#: Videos in the global batch (WORLD shares of BATCH / WORLD).
BATCH = 4
#: Relative difference (max |G processes - one| / max |one| per tensor) allowed: the order of the sums differs.
#: Measured (docs/studies/distributed_equivalence.py, distributed_equivalence.txt): our trainer's step 2.2e-6 at most
#: (tiny CLIP and random ViT-B-32 with 101 classes, gradients and tensors after two steps, AdamW and CoOp's SGD);
#: the planted faults 0.55 or more. 1e-4 sits 45x above the one and 5000x below the other.
TOLERANCE = 1e-4


def _rel(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) if b.numel() else 0.0


def _ratio(many: dict, one: dict) -> float | None:
    """The factor c fitting G processes' gradients as c x one process's (least squares over every tensor)."""
    num = den = 0.0
    for n, g in one.items():
        if g is not None and many.get(n) is not None:
            num += float((many[n].float() * g.float()).sum())
            den += float(g.float().pow(2).sum())
    return num / den if den else None


def why(ranks_differ: bool, ratio: float | None) -> str:
    """The likely cause of a difference, from its shape."""
    if ranks_differ:
        return ("the processes hold different gradients: they are not all-reduced (the model is not wrapped in "
                "DistributedDataParallel, or a trainable tensor sits outside the wrapped module)")
    if ratio is not None and abs(ratio - WORLD) < 0.01 * WORLD:
        return (f"{ratio:.3g} x the one-process gradient, the world size: the loss is multiplied by the world size "
                f"(or summed over the processes) while DDP averages")
    if ratio is not None and abs(ratio - 1 / WORLD) < 0.01 / WORLD:
        return (f"{ratio:.3g} x the one-process gradient, 1 / the world size: each process averages its own share "
                f"and DDP averages again (divide the summed loss by the global batch, as train_one_epoch does)")
    return ((f"{ratio:.3g} x the one-process gradient, and not in proportion: " if ratio is not None else "")
            + "part of the gradient is lost or changed across processes (an all_gather without autograd: use "
              "torch.distributed.nn.functional.all_gather; a scalar gathered into a vector of one copy per process)")


@audit(
    "distributed-equivalence",
    title=f"{WORLD} processes train as one",
    problem="several GPUs give other numbers than one: an all_gather without autograd (the loss stops falling), a "
            "loss scaled by the world size, a missing all-reduce (each process trains its own model), a scalar "
            "gathered into one copy per process (DataParallel's logit_scale)",
    fix=f"the target's distributed step in {WORLD} gloo processes on the CPU, each on its share of a global batch, "
        f"against one process on the same batch: the gradients after each of {STEPS} steps and the trainable "
        f"tensors after them agree within fp32 rounding, on every process",
    remediation="wrap the trainable module in DistributedDataParallel; scale each process's summed loss by world "
                "size / global batch (DDP averages); gather features with torch.distributed.nn.functional.all_gather "
                "(it carries gradients); keep scalars such as the logit scale out of gathers",
    needs=("distributed", "train"),
)
def distributed_equivalence(target: AuditTarget) -> Outcome:
    """One process and WORLD processes, forked here, on the same global batch."""
    if not spawning_allowed():
        raise Skip(f"starts {WORLD + 1} processes (gloo on the CPU): opt in with python -m checks --spawn (pytest: "
                   f"--audit-spawn; run_audits(spawn=True))")
    location = locate(target.distributed_step)
    x, y, mask, data = training_batch(target, BATCH)
    worlds = run_worlds(target, (1, WORLD), (x, y, mask), STEPS)
    one, many = worlds[1][0], worlds[WORLD]
    errors = [r for r in [one, *many] if r.error]
    evidence = [f"global batch: {data}; {WORLD} shares of {BATCH // WORLD} (batch[rank::{WORLD}])",
                f"{STEPS} step(s) of the declared distributed step, in 1 process and in {WORLD} (gloo, forked)"]
    if errors:
        r = errors[0]
        return Outcome(Status.FAIL, f"the distributed step raised in process {r.rank} of {r.size}: {r.error}",
                       {"processes": WORLD}, evidence, location)
    diffs, worst, ranks_differ = [], (0.0, "", 0), False
    for step in range(STEPS):
        for r in many:
            for n, g in one.grads[step].items():
                d = _rel(r.grads[step].get(n), g)
                if d > worst[0]:
                    worst = (d, f"the gradient of {n} at step {step + 1} (process {r.rank})", step)
        if any(_rel(many[0].grads[step].get(n), r.grads[step].get(n)) > TOLERANCE for r in many[1:]
               for n in one.grads[step]):
            ranks_differ = True
    for r in many:
        for n, t in one.params.items():
            d = _rel(r.params.get(n), t)
            diffs.append(d)
            if d > worst[0]:
                worst = (d, f"{n} after {STEPS} steps (process {r.rank})", STEPS - 1)
    ratio = _ratio(many[0].grads[0], one.grads[0])
    metrics = {"processes": WORLD, "steps": STEPS, "max_rel_diff": worst[0], "gradient_ratio": ratio,
               "tolerance": TOLERANCE, "losses_one": one.losses, "losses_rank0": many[0].losses}
    evidence += [f"losses: one process {', '.join(f'{v:.5g}' for v in one.losses)}; process 0 of {WORLD} "
                 f"{', '.join(f'{v:.5g}' for v in many[0].losses)}",
                 f"largest difference: {worst[1] or 'none'}, {worst[0]:.2e} (relative; tolerance {TOLERANCE:g})",
                 f"step 1's gradients of {WORLD} processes = {'-' if ratio is None else f'{ratio:.4g}'} x one process's"]
    if worst[0] > TOLERANCE:
        return Outcome(Status.FAIL, f"{WORLD} processes differ from one on the same global batch: {worst[1]} by "
                       f"{worst[0]:.2e} (relative): {why(ranks_differ, ratio)}", metrics, evidence, location)
    return Outcome(Status.PASS, f"{WORLD} processes and one agree on the same global batch: gradients of {STEPS} steps "
                   f"and the tensors after them within {worst[0]:.1e} (tolerance {TOLERANCE:g})", metrics, evidence,
                   location)
