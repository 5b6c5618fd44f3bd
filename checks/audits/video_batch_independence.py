"""video-batch-independence: a video's logits do not depend on the other videos of its batch."""
from __future__ import annotations

import torch

from ..core import AuditTarget, Outcome, Status, audit
from ..inputs import sample_batch
from ..locations import video_location
from ..models import video_copy
from ..tolerances import logits_tolerance, rel_diff

BATCH = 4


def _halves(model, x: torch.Tensor) -> torch.Tensor:
    h = x.shape[0] // 2
    return torch.cat([model(x[:h]), model(x[h:])])


@audit(
    "video-batch-independence",
    title="Each video is scored independently of its batch",
    problem="a mean over the batch axis, batch statistics (BatchNorm) or a temporal module attending across "
            "the batch (batch_first forgotten) mix the videos: a video's logits change with its batch-mates, "
            "and evaluation with another batch size gives other numbers",
    fix="each video's logits are the same alone, in half the batch and in the whole batch (eval mode), and "
        "in half the batch and the whole batch in training mode",
    remediation="reduce over frames (dim 1) only, never over the batch (dim 0); use LayerNorm rather than "
                "BatchNorm on video features; build temporal transformers with batch_first=True for [B, T, D]",
)
def video_batch_independence(target: AuditTarget) -> Outcome:
    """Logits of a batch of videos against the same videos alone and in halves, in eval and train mode."""
    model, made = video_copy(target)
    x, _ = sample_batch(target, batch=BATCH, frames=4)
    evidence, metrics = [made], {"videos": BATCH}
    with torch.no_grad():
        model.eval()
        full = model(x)  # [B, n_cls]
        tol = logits_tolerance(full)
        alone = torch.cat([model(x[i:i + 1]) for i in range(BATCH)])
        eval_diff = torch.maximum(rel_diff(alone.float(), full.float()), rel_diff(_halves(model, x).float(), full.float()))
        evidence += [f"eval: video {i} alone / in half the batch vs in all {BATCH}: {float(d):.2e} (relative)"
                     for i, d in enumerate(eval_diff)]
        model.train()
        first = model(x)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            again = model(x)
        if torch.equal(first, again):
            train_diff = rel_diff(_halves(model, x).float(), first.float())  # [B]
            evidence += [f"train mode: video {i} in half the batch vs in all {BATCH}: {float(d):.2e}"
                         for i, d in enumerate(train_diff)]
        else:
            train_diff = None
            evidence.append("train mode draws random numbers (dropout?): the same batch twice gave other logits, "
                            "so training mode is not compared")
    evidence.append(f"tolerance {tol:g}")
    metrics.update(eval_max_rel_diff=float(eval_diff.max()), tolerance=tol,
                   train_max_rel_diff=None if train_diff is None else float(train_diff.max()))
    location = video_location(model, r"mean\(|norm|dim=0") or video_location(model)
    if float(eval_diff.max()) > tol:
        worst = int(eval_diff.argmax())
        return Outcome(Status.FAIL, f"video {worst}'s logits differ alone and in a batch of {BATCH} by "
                       f"{float(eval_diff.max()):.2e} (relative, tolerance {tol:g}): the video path mixes videos "
                       f"(a mean over the batch axis, attention across the batch)", metrics, evidence, location)
    if train_diff is not None and float(train_diff.max()) > tol:
        worst = int(train_diff.argmax())
        return Outcome(Status.FAIL, f"in training mode video {worst}'s logits depend on its batch-mates "
                       f"({float(train_diff.max()):.2e} relative between a batch of {BATCH} and its halves; eval mode "
                       f"is independent): batch statistics in the video path (BatchNorm?)", metrics, evidence, location)
    return Outcome(Status.PASS, f"each of {BATCH} videos gets the same logits alone, in half and in the whole batch "
                   f"(max {float(eval_diff.max()):.1e}, tolerance {tol:g}"
                   f"{'' if train_diff is not None else '; eval mode only'})", metrics, evidence, location)
