"""temporal-padding: zero frames appended to a video (with its mask) change none of its logits."""
from __future__ import annotations

import torch

from .. import contract
from ..causes import deferred
from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..inputs import frames, probe_videos
from ..locations import video_location
from ..models import copy_model, run_model
from ..tolerances import rel_diff, video_tolerance

#: Zero frames appended, videos.
PAD, BATCH = 3, 2
#: Items read per dataset to see whether its videos differ in length (and so get padded).
MAX_ITEMS = 256


def lengths(target: AuditTarget) -> set[int]:
    """The frame counts of the target's videos (items read from its datasets)."""
    found = set()
    for _, ds in target.datasets():
        for i in range(min(len(ds), MAX_ITEMS)):
            item = ds[i]
            features = item[0] if isinstance(item, (tuple, list)) else None
            if hasattr(features, "shape") and len(features.shape) == 2:
                found.add(int(features.shape[0]))
    return found


@audit(
    "temporal-padding",
    title="Zero frames appended with the mask change no logits",
    problem="videos of different lengths are zero-padded to the longest in a batch; a temporal mean over "
            "every frame (the mask ignored, or no mask at all) or a max over the padding gives a padded video "
            "other logits than the same video alone: they depend on its batch-mates' lengths",
    fix="appending zero frames to every video, with a mask marking them (as videocoop.data.collate_samples "
        "pads), leaves every video's logits unchanged",
    remediation="take the mask in forward(features, mask) and aggregate over the real frames only: a masked "
                "mean (sum of frames x mask / number of real frames), masked_fill(-inf) before a max, "
                "src_key_padding_mask=~mask in a temporal transformer",
    needs=("forward",),
)
def temporal_padding(target: AuditTarget) -> Outcome:
    """Run a batch of videos as is and with zero frames appended (and the mask), compare logits."""
    model = copy_model(target.model)
    T = frames(target)
    x = probe_videos(target, BATCH)
    x[..., 0] = -x[..., 0].abs() - 0.1  # one feature negative in every frame: a max over zero frames shows
    padded = torch.cat([x, x.new_zeros(BATCH, PAD, x.shape[-1])], dim=1)  # [B, T + PAD, D]
    mask = (torch.arange(T + PAD)[None, :].expand(BATCH, -1) < T).to(x.device)  # [B, T + PAD]: the real frames
    masked = target.logits is not None or contract.takes_mask(model)
    base = run_model(target, x, model=model)  # [B, n_cls]: a batch nobody padded
    try:
        out = run_model(target, padded, mask if masked else None, model=model)
    except Exception as e:  # noqa: BLE001: the model took T frames and refuses T + PAD: a fixed frame count
        raise Skip(f"the model takes {T} frames and refuses {T + PAD} ({type(e).__name__}: "
                   f"{(str(e).splitlines() or [''])[0][:100]}): a fixed frame count, so its videos are never padded"
                   + ("" if target.frames else f" (declare AuditTarget(frames={T}) to say so)")) from e
    diff = rel_diff(out.float(), base.float())  # [B]
    tol = video_tolerance(target)
    call = f"model(features + {PAD} zero frames, mask {list(mask.shape)})" if masked else \
        f"model(features + {PAD} zero frames) (its forward takes no mask)"
    evidence = [f"model(features [{BATCH}, {T}, {x.shape[-1]}]) vs {call}",
                "frame features with one dimension negative in every frame, so a max over the zero frames shows",
                *[f"video {b}: logits moved by {float(d):.2e} (relative to the row's largest)" for b, d in enumerate(diff)],
                f"a copy of the model, its whole forward (text side included) run for each batch; {tol.note}"]
    metrics = {"videos": BATCH, "frames": T, "zero_frames": PAD, "takes_mask": masked,
               "max_rel_diff": float(diff.max()), **tol.metrics()}
    location = video_location(model, r"mask|mean\(|max\(|sum\(") or video_location(model)
    worst = int(diff.argmax())
    if float(diff.max()) > tol.value and (cause := deferred(target, "nondeterministic", what="padding's effect")):
        return cause
    if float(diff.max()) <= tol.value:
        how = "with the mask" if masked else "without a mask (the model takes none)"
        return Outcome(Status.PASS, f"{PAD} zero frames appended {how} change no logits (max {float(diff.max()):.1e}, "
                       f"tolerance {tol})", metrics, evidence, location)
    if masked:
        return Outcome(Status.FAIL, f"{PAD} zero frames appended, with the mask marking them, moved video {worst}'s "
                       f"logits by {float(diff.max()):.2e} (relative): the temporal aggregation counts the padding "
                       f"(the mask ignored, or a max over zero frames)", metrics, evidence, location)
    seen = lengths(target)
    metrics["video_lengths"] = sorted(seen)
    if len(seen) == 1:
        evidence.append(f"every video read has {seen.pop()} frames: no batch of this data is padded")
        return Outcome(Status.WARN, f"the model takes no mask and zero frames move its logits ({float(diff.max()):.2e} "
                       f"relative); harmless while every video has the same number of frames (as here), wrong once "
                       f"lengths differ", metrics, evidence, location)
    lens = f"videos of {min(seen)} to {max(seen)} frames" if seen else "videos of unknown lengths"
    return Outcome(Status.FAIL, f"the model takes no mask, so padded videos are aggregated with their zero frames: "
                   f"{PAD} appended moved video {worst}'s logits by {float(diff.max()):.2e} (relative); the data has "
                   f"{lens}", metrics, evidence, location)
