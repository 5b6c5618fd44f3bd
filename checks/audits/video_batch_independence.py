"""video-batch-independence: a video's logits do not depend on the other videos of its batch."""
from __future__ import annotations

import torch

from torch import nn

from .. import contract
from ..causes import deferred
from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import probe_videos
from ..locations import video_location
from ..models import copy_model, preserved_modes, run_model
from ..tolerances import rel_diff, video_tolerance

BATCH = 4
#: Videos scored alone (the first and the last): a batch-dependence shows in any of them, and each
#: forward runs the whole text side.
ALONE = (0, BATCH - 1)


def _halves(run, x: torch.Tensor) -> torch.Tensor:
    h = x.shape[0] // 2
    return torch.cat([run(x[:h]), run(x[h:])])


def _train_logits(target: AuditTarget, model: nn.Module, batchnorm_eval: bool = False):
    """``x -> logits`` of the model in training mode (BatchNorm layers in eval mode when asked)."""
    def run(x):
        with preserved_modes(model), torch.no_grad():
            model.train()
            if batchnorm_eval:
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            return contract.logits(target, model, x)
    return run


def train_mode(target: AuditTarget, model: nn.Module, x: torch.Tensor, full: torch.Tensor, evidence: list):
    """``[B]``: each video's move between its half of the batch and the whole batch in training mode;
    None when that mode gives no logits to compare (a forward returning the loss), draws random
    numbers, or computes exactly what eval mode does (``full``, already compared)."""
    run = _train_logits(target, model)
    try:
        first = run(x)
    except Exception as e:  # noqa: BLE001: a training forward that needs the labels gives no logits here
        evidence.append(f"training mode not compared: the forward there does not give logits ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:80]}); eval mode judges")
        return None
    if not isinstance(first, torch.Tensor) or first.shape != (x.shape[0], len(target.classnames)):
        evidence.append(f"training mode not compared: the forward there returns {contract.describe(first)}")
        return None
    if torch.equal(first, full):
        evidence.append("training mode gives the batch exactly the logits eval mode gives (no dropout, no batch "
                        "statistics): the eval comparisons stand for it")
        return torch.zeros(x.shape[0])
    with torch.random.fork_rng(devices=[] if x.device.type != "cuda" else [x.device]):
        torch.manual_seed(12345)
        again = run(x)
    if not torch.equal(first, again):
        evidence.append("train mode draws random numbers (dropout?): the same batch twice gave other logits, "
                        "so training mode is not compared")
        return None
    diff = rel_diff(_halves(run, x).float(), first.float())  # [B]
    evidence += [f"train mode: video {i} in half the batch vs in all {x.shape[0]}: {float(d):.2e}" for i, d in enumerate(diff)]
    return diff


@audit(
    "video-batch-independence",
    title="Each video is scored independently of its batch",
    problem="a mean over the batch axis, batch statistics in evaluation, a temporal module attending across the "
            "batch (batch_first forgotten), or prompts conditioned on the batch rather than on each video mix the "
            "videos: a video's logits change with its batch-mates, and evaluation with another batch size gives "
            "other numbers",
    fix="each video's logits, the text side recomputed in every forward, are the same alone, in half the batch "
        "and in the whole batch (eval mode), and in half the batch and the whole batch in training mode (batch "
        "statistics of BatchNorm there are BatchNorm's design: a WARN)",
    remediation="reduce over frames (dim 1) only, never over the batch (dim 0); condition prompts on each video, not "
                "on the batch; keep BatchNorm's running statistics for evaluation (track_running_stats=True); build "
                "temporal transformers with batch_first=True for [B, T, D]",
    needs=("forward",),
)
def video_batch_independence(target: AuditTarget) -> Outcome:
    """Logits of a batch of videos against the same videos in halves and alone, in eval and train mode."""
    model = copy_model(target.model)
    x = probe_videos(target, BATCH)
    tol = video_tolerance(target)
    evidence = ["a copy of the model, its whole forward (the text side included) run for every batch: prompts "
                "conditioned on the videos see each batch as training does"]
    metrics = {"videos": BATCH}
    location = video_location(model, r"mean\(|norm|dim=0") or video_location(model)

    def run(v):
        return run_model(target, v, model=model)

    full = run(x)  # [B, n_cls]
    eval_diff = rel_diff(_halves(run, x).float(), full.float())  # [B]
    evidence += [f"eval: video {i} in half the batch vs in all {BATCH}: {float(d):.2e} (relative)"
                 for i, d in enumerate(eval_diff)]
    if float(eval_diff.max()) <= tol.value:
        try:
            alone = torch.cat([run(x[i:i + 1]) for i in ALONE])
        except Exception as e:  # noqa: BLE001: a video path that cannot score one video needs its batch-mates
            metrics.update(eval_max_rel_diff=float(eval_diff.max()), **tol.metrics())
            return Outcome(Status.FAIL, f"a video alone cannot be scored ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:100]}): the video path mixes videos (statistics of "
                           f"the batch in evaluation)", metrics, evidence, location)
        alone_diff = rel_diff(alone.float(), full[list(ALONE)].float())
        evidence += [f"eval: video {i} alone vs in all {BATCH}: {float(d):.2e}" for i, d in zip(ALONE, alone_diff)]
        eval_diff[list(ALONE)] = torch.maximum(eval_diff[list(ALONE)], alone_diff)
    train_diff = train_mode(target, model, x, full, evidence)
    evidence.append(tol.note)
    metrics.update(eval_max_rel_diff=float(eval_diff.max()), **tol.metrics(),
                   train_max_rel_diff=None if train_diff is None else float(train_diff.max()))
    if float(eval_diff.max()) > tol.value:
        if (cause := deferred(target, "nondeterministic", what="a video's logits alone and in a batch")) is not None:
            return cause
        worst = int(eval_diff.argmax())
        return Outcome(Status.FAIL, f"video {worst}'s logits differ alone or in half the batch and in a batch of "
                       f"{BATCH} by {float(eval_diff.max()):.2e} (relative, tolerance {tol}): the video path mixes "
                       f"videos (a mean over the batch axis, attention across the batch, prompts conditioned on the "
                       f"batch)", metrics, evidence, location)
    if train_diff is not None and float(train_diff.max()) > tol.value:
        worst = int(train_diff.argmax())
        bn = _train_logits(target, model, batchnorm_eval=True)
        if float(rel_diff(_halves(bn, x).float(), bn(x).float()).max()) <= tol.value:
            evidence.append("with the BatchNorm layers alone in eval mode the training forward is independent: "
                            "BatchNorm's batch statistics are the only mixing")
            return Outcome(Status.WARN, f"in training mode video {worst}'s logits depend on its batch-mates "
                           f"({float(train_diff.max()):.2e} relative) through BatchNorm's batch statistics only, as "
                           f"BatchNorm does by design; evaluation is independent (the batch size changes training)",
                           metrics, evidence, location)
        return Outcome(Status.FAIL, f"in training mode video {worst}'s logits depend on its batch-mates "
                       f"({float(train_diff.max()):.2e} relative between a batch of {BATCH} and its halves; eval mode "
                       f"is independent)", metrics, evidence, location)
    return Outcome(Status.PASS, f"{BATCH} videos get the same logits in half and in the whole batch, videos "
                   f"{' and '.join(map(str, ALONE))} alone too "
                   f"(max {float(eval_diff.max()):.1e}, tolerance {tol}"
                   f"{'' if train_diff is not None else '; eval mode only'})", metrics, evidence, location)
