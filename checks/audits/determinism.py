"""determinism: the same evaluation twice gives the same logits, the same validation data, and two seeded
trainings give the same tensors; the versions and flags that decide it are recorded."""
from __future__ import annotations

import os

import open_clip
import torch

from ..causes import eval_repeat
from ..core import AuditTarget, Outcome, Status, audit
from ..locations import locate
from ..tolerances import FP32_TOL, rel_diff
from ..training import short_training

#: Steps of the second seeded training, compared with the first's tensors after as many steps.
STEPS = 2
#: Validation items read twice.
ITEMS = 8
#: What makes CUDA exact (named when a CUDA training differs).
CUDA_SETTINGS = ("torch.use_deterministic_algorithms(True), CUBLAS_WORKSPACE_CONFIG=:4096:8, "
                 "torch.backends.cudnn.deterministic = True, torch.backends.cudnn.benchmark = False")


def environment() -> dict:
    """The versions and flags that decide whether a run repeats: torch, open_clip, CUDA and cuDNN, the
    deterministic-algorithms flag, cuDNN's flags and the cuBLAS workspace setting."""
    cudnn = torch.backends.cudnn
    return {
        "torch": torch.__version__, "open_clip": open_clip.__version__, "cuda": torch.version.cuda or "none",
        "cudnn": str(cudnn.version()) if cudnn.is_available() else "none",
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": cudnn.deterministic, "cudnn_benchmark": cudnn.benchmark,
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset"),
    }


def environment_line(env: dict | None = None) -> str:
    env = environment() if env is None else env
    return (f"torch {env['torch']}, open_clip {env['open_clip']}, CUDA {env['cuda']} (cuDNN {env['cudnn']}); "
            f"deterministic algorithms {'on' if env['deterministic_algorithms'] else 'off'}, cudnn.deterministic "
            f"{env['cudnn_deterministic']}, cudnn.benchmark {env['cudnn_benchmark']}, CUBLAS_WORKSPACE_CONFIG "
            f"{env['CUBLAS_WORKSPACE_CONFIG']}")


def _features(item):
    x = item[0] if isinstance(item, (tuple, list)) and item else item
    return torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x


def validation_reads(target: AuditTarget) -> tuple[list[str], int]:
    """Validation items whose features differ between two reads (random crops in evaluation), and how many
    were read."""
    ds = target.val_dataset
    if ds is None:
        return [], 0
    n = min(len(ds), ITEMS)
    differ = []
    for i in range(n):
        a, b = _features(ds[i]), _features(ds[i])
        if a.shape != b.shape or not torch.equal(a, b):
            differ.append(f"validation item {i}: " + (f"shape {list(a.shape)} then {list(b.shape)}" if a.shape != b.shape
                                                       else f"features differ by up to {float((a - b).abs().max()):.3g}"))
    return differ, n


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN where the other is NaN (a training that diverges the same way twice repeats)."""
    return torch.equal(a, b) or (torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0), b.nan_to_num(0)))


def trainings(target: AuditTarget) -> tuple[str | None, list[str], dict]:
    """Two seeded trainings of STEPS steps: the finding (None: the same), evidence, metrics."""
    first = short_training(target)
    second = short_training(target, STEPS, fresh=True)
    a, b = first.snapshots[STEPS - 1], second.snapshots[STEPS - 1]
    on_cuda = any(t.is_cuda for t in target.model.parameters())
    diffs = {n: float(rel_diff(b[n].float().nan_to_num(0).reshape(1, -1), a[n].float().nan_to_num(0).reshape(1, -1)).max())
             for n in a}
    differ = sorted((n for n in a if not _same(a[n], b[n])), key=lambda n: -diffs[n])
    worst = max(diffs.values(), default=0.0)
    evidence = [f"two trainings from seed 0 ({STEPS} steps of {first.optimizer} on {first.batch}): losses "
                f"{', '.join(f'{v:.6g}' for v in first.losses[:STEPS])} and {', '.join(f'{v:.6g}' for v in second.losses)}",
                f"{len(a)} trainable tensor(s) compared " + ("bitwise (CPU)" if not on_cuda else f"within {FP32_TOL:g} "
                                                                                                 f"(CUDA)")]
    metrics = {"training_max_rel_diff": worst, "tensors_differing": len(differ)}
    if first.batch_digest != second.batch_digest:
        return ("the training batch differs between two reads from the same seed: the dataset draws random numbers "
                "from an unseeded source (numpy's default_rng(), random.Random(), a fresh generator)"), evidence, metrics
    if not differ or (on_cuda and worst <= FP32_TOL):
        return None, evidence, metrics
    where = f"{differ[0]} by {diffs[differ[0]]:.2e} (relative)"
    if on_cuda:
        return (f"two seeded trainings on CUDA differ after {STEPS} steps ({len(differ)} tensor(s), {where}), beyond "
                f"{FP32_TOL:g}: nondeterministic kernels; exact with {CUDA_SETTINGS}"), evidence, metrics
    return (f"two seeded trainings differ after {STEPS} steps ({len(differ)} tensor(s), {where}): the training step "
            f"draws random numbers that the seed does not fix (numpy's default_rng(), random.Random(), time-based seeds)"
            ), evidence, metrics


@audit(
    "determinism",
    title="The same seed gives the same numbers",
    problem="runs that cannot be reproduced with the same seed (dropout left on in evaluation, F.dropout's default "
            "training=True, unseeded noise, random temporal crops in the validation data): nobody can tell machine "
            "variance from a bug, and every comparison of two forwards (a checkpoint round trip, padding, batch "
            "independence) differs for that reason alone",
    fix="the same videos through the eval forward twice give identical logits; validation items read twice are "
        "identical; two short trainings from the same seed (torch, numpy and Python seeded) give bitwise the same "
        "trainable tensors on the CPU (within fp32 rounding on CUDA); the versions and flags are recorded",
    remediation="pass training=self.training to F.dropout (or use nn.Dropout), draw noise only in training and from "
                "torch's seeded generator, sample validation frames deterministically (segment middles); on CUDA set "
                + CUDA_SETTINGS,
    needs=("forward", "train"),
)
def determinism(target: AuditTarget) -> Outcome:
    """Eval twice, validation items twice, two seeded short trainings."""
    env = environment()
    location = locate(type(target.model).forward)
    rep = eval_repeat(target)
    evidence = [environment_line(env), f"eval forward twice on the same videos: max relative difference "
                f"{rep.get('diff', 0.0):.2e}" + (f"; random draws: {'; '.join(rep['sites'][:3])}" if rep.get("sites") else "")]
    metrics = {**env, "eval_max_rel_diff": rep.get("diff")}
    problems = [rep["cause"]] if rep.get("cause") else []
    differ, read = validation_reads(target)
    if read:
        evidence.append(f"{read} validation item(s) read twice: {len(differ)} differ")
    problems += [f"the validation data differs from read to read ({differ[0]}): random frames in evaluation; sample "
                 f"the segment middles"] if differ else []
    found, more, numbers = trainings(target)
    evidence += more
    metrics.update(numbers)
    problems += [found] if found else []
    if problems:
        return Outcome(Status.FAIL, problems[0], metrics, evidence + problems[1:], location)
    return Outcome(Status.PASS, f"identical logits from two eval forwards, {read} validation item(s) identical read to "
                   f"read, two seeded trainings give the same tensors after {STEPS} steps", metrics, evidence, location)
