"""extraction-parity: the stored frame features are what CLIP computes from the frames they name."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import av
import torch
from open_clip import get_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2

from videocoop.data import frame_indices
from videocoop.video import FrameClock

from ..core import AuditTarget, Outcome, Skip, Status, audit
from ..locations import locate, relpath
from ..text import spread

#: FAIL: some frame's stored features differ from CLIP's by more than this, relative to
#: their norm (||stored - clip|| / ||clip||), by the image tower's precision recorded in
#: features.json. Measured on random ViT-B-32 (docs/studies/extraction_parity.md): honest
#: extraction 9e-5 to 2.3e-4 with an fp32 tower, 1.2e-3 with fp16 (CUDA's default); the
#: lightest faults 7e-3 (bilinear resize) and 1.6e-2 (ImageNet mean/std), the others 0.2
#: and more. 3e-3 sits between fp16's honest error and the lightest fault with a factor
#: of 2.3 to 2.6 each side (13 above fp32's).
REL_ERR_FAIL = 3e-3
#: bf16 keeps 8 significant bits: an honest bf16 tower is 9.5e-3 from CLIP's fp32 features,
#: as far as the lightest faults; its line keeps the same factor of 3 above its own noise,
#: so it still catches BGR, stretching, another tower and frames at other times (0.2-1.5),
#: not bilinear or ImageNet mean/std (the evidence says so).
REL_ERR_FAIL_BF16 = 3e-2
#: Videos compared per split (spread over the split's files): each costs a full decode and
#: one image-tower forward per kept frame.
VIDEOS_PER_SPLIT = 2


def _decode(path: Path, sampling: dict) -> tuple[list[int], list, int]:
    """Decode every frame in order (no seeking), choose the frames the sampling names,
    return ``(indices, PIL images, frame count)``. Frames are timed as the extractor times
    them (:class:`videocoop.video.FrameClock`: frames without timestamps by the frame rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        clock = FrameClock(stream)
        times = [clock(f) for f in container.decode(stream)]
    if not times:
        raise ValueError(f"{path}: no frames")
    if sampling.get("method") == "segment-middle":
        wanted = frame_indices(len(times), int(sampling["num_frames"])).tolist()
    elif sampling.get("method") == "fps":
        wanted = _on_screen(times, float(sampling["fps"]))
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    images = {}
    with av.open(str(path)) as container:  # from the start again: a raw stream cannot seek back
        for n, frame in enumerate(container.decode(container.streams.video[0])):
            if n in wanted:
                images[n] = frame.to_image()  # PIL, RGB
            if n >= max(wanted):
                break
    return wanted, [images[i] for i in wanted], len(times)


def _on_screen(times: list[float], fps: float) -> list[int]:
    """The frame showing at each of 0, 1/fps, ... before the end (last start + median gap)."""
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    end = times[-1] + (gaps[len(gaps) // 2] if gaps else 0.0)
    out, k = [], 0
    while k == 0 or k / fps < end - 1e-9:
        out.append(max(i for i, t in enumerate(times) if t <= k / fps + 1e-9))
        k += 1
    return out


class _Reference:
    """open_clip's own pipeline: its PIL preprocess and the image tower in fp32."""

    def __init__(self, clip):
        # a copy when the model's weights are half precision
        fp32 = all(p.dtype == torch.float32 for p in clip.visual.parameters())
        self.tower = clip if fp32 else copy.deepcopy(clip).float()
        self.device = next(self.tower.visual.parameters()).device
        cfg = get_model_preprocess_cfg(clip)
        self.preprocess = image_transform_v2(
            PreprocessCfg(**{k: v for k, v in cfg.items() if k in PreprocessCfg.__dataclass_fields__}), is_train=False)
        self.description = (f"reference: open_clip PIL preprocess ({cfg.get('resize_mode', 'shortest')} resize to "
                            f"{cfg.get('size')}, {cfg.get('interpolation', 'bicubic')}, mean "
                            f"{tuple(round(m, 4) for m in cfg['mean'])}) + encode_image in fp32")

    def encode(self, images: list) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)  # [T, 3, h, w]
        with torch.no_grad():
            return self.tower.encode_image(pixels).float().cpu()  # [T, D]


@dataclass
class _Tally:
    """What the sampled feature files showed, over every split."""

    evidence: list[str]
    problems: list[str] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)  # relative error per compared frame
    cosines: list[float] = field(default_factory=list)
    compared: int = 0  # videos
    frames: int = 0
    unreachable: list[str] = field(default_factory=list)  # source videos not found
    unrecorded: int = 0  # feature files that cannot be read or name no source


def _sourced_splits(target: AuditTarget) -> list[tuple[str, object, dict]]:
    """``[(split, dataset, features.json)]`` for the splits whose features.json names their source videos."""
    named = [(split, ds, getattr(ds, "info", None) or {}) for split, ds in target.datasets()]
    if not named:
        raise Skip("no dataset to compare")
    sourced = [(split, ds, info) for split, ds, info in named if info.get("source_root") and info.get("sampling")]
    if not sourced:
        raise Skip("features.json names no source videos (source_root, sampling): the features were not made by "
                   "`videocoop extract`, so there is nothing to decode and compare")
    return sourced


def _limit(split: str, info: dict) -> tuple[float, str]:
    """The FAIL line for features from this split's tower precision, and the evidence line saying so."""
    bf16 = info.get("precision") == "bf16"
    limit = REL_ERR_FAIL_BF16 if bf16 else REL_ERR_FAIL
    return limit, (f"{split}: extracted with a {info.get('precision', 'unrecorded')} tower; FAIL above relative error "
                   f"{limit:g}" + (" (bf16's own error is 1e-2: a bilinear resize or ImageNet mean/std cannot be told "
                                   "from it)" if bf16 else ""))


def _stored(path: Path, split: str, tally: _Tally) -> dict | None:
    """The feature file's payload when it records its source video, else None (the tally says why)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001: a missing per-file source of a packed split, a foreign file
        tally.unrecorded += 1
        tally.evidence.append(f"{split}: cannot read {relpath(str(path))} ({type(e).__name__}); not compared")
        return None
    if not isinstance(payload, dict) or "source" not in payload:
        tally.unrecorded += 1
        tally.evidence.append(f"{split}: {relpath(str(path))} records no source video; not compared")
        return None
    return payload


def _compare(path: Path, split: str, info: dict, limit: float, reference: _Reference, tally: _Tally) -> None:
    """One feature file against CLIP's own features of the frames its sampling names, into ``tally``."""
    payload = _stored(path, split, tally)
    if payload is None:
        return
    name = payload["source"]
    source = Path(info["source_root"]) / name
    if not source.is_file():
        tally.unreachable.append(str(source))
        return
    try:
        wanted, images, length = _decode(source, info["sampling"])
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        tally.problems.append(f"{name}: has features but does not decode ({type(e).__name__}: {e})")
        return
    recorded = list(payload.get("frame_indices", []))
    stored = payload["features"].float()  # [T, D]
    if recorded != wanted:
        tally.problems.append(f"{name}: frames {recorded} recorded, the sampling in features.json "
                              f"({info['sampling']}) gives {wanted} of {length}")
    if stored.shape[0] != len(wanted):
        tally.problems.append(f"{name}: {stored.shape[0]} stored frames, the sampling gives {len(wanted)}")
        return
    ref = reference.encode(images)  # [T, D]
    if ref.shape != stored.shape:
        tally.problems.append(f"{name}: stored features {list(stored.shape)}, CLIP gives {list(ref.shape)}")
        return
    rel = ((stored - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12))  # [T]
    cos = torch.nn.functional.cosine_similarity(stored, ref, dim=-1)  # [T]
    tally.errors.extend(rel.tolist())
    tally.cosines.extend(cos.tolist())
    tally.compared += 1
    tally.frames += len(wanted)
    worst = int(rel.argmax())
    tally.evidence.append(f"{split}: {name} ({length} frames, kept {wanted}): relative error max "
                          f"{float(rel.max()):.2e} (frame {wanted[worst]}), median {float(rel.median()):.2e}; "
                          f"cosine min {float(cos.min()):.6f}")
    if float(rel.max()) > limit:
        tally.problems.append(f"{name} frame {wanted[worst]}: stored features differ from CLIP's by "
                              f"{float(rel.max()):.2e} (relative)")


def _extractor_location(sourced: list[tuple[str, object, dict]]) -> str | None:
    """Where the features were made: our extractor's encode step, else the dataset's class."""
    if {info.get("source") for _, _, info in sourced} == {"videocoop extract"}:
        from videocoop.video import Extractor

        return locate(Extractor._take, r"resize_crop")
    return locate(type(sourced[0][1]))


@audit(
    "extraction-parity",
    title="Stored features equal CLIP's own on the source frames",
    problem="the extractor made the features differently from CLIP's own pipeline: frames read as BGR (OpenCV's "
            "default), ImageNet mean/std instead of CLIP's, a stretched resize instead of resize + centre crop, "
            "another tower's weights, frames taken at other times than recorded; training then learns prompts "
            "for features no CLIP user will ever compute",
    fix="for a sample of videos whose sources are reachable, decodes the recorded frames independently (every "
        "frame in order, PyAV), runs open_clip's own PIL preprocess and encode_image (fp32), and compares with "
        "the stored features frame by frame by relative error",
    remediation="re-extract with `videocoop extract` (CLIP's own preprocessing, RGB, the model's tower); if you "
                "extract with your own code, compare it with open_clip's preprocess on one frame",
)
def extraction_parity(target: AuditTarget) -> Outcome:
    """Stored features of a few videos per split against open_clip's preprocess + encode_image."""
    clip = target.clip_model
    if clip is None or not hasattr(clip, "encode_image"):
        raise Skip("the target gives no CLIP model with an image tower: return AuditTarget(..., clip_model=...) to run it")
    sourced = _sourced_splits(target)
    reference = _Reference(clip)
    limits, lines = {}, [reference.description]
    for split, _, info in sourced:
        limits[split], line = _limit(split, info)
        lines.append(line)
    tally = _Tally(lines)
    for split, ds, info in sourced:
        files = list(getattr(ds, "files", []))
        for i in spread(len(files), VIDEOS_PER_SPLIT):
            _compare(Path(files[i][0]), split, info, limits[split], reference, tally)
    if tally.unreachable:
        tally.evidence.append(f"{len(tally.unreachable)} sampled source video(s) not reachable, e.g. "
                              f"{tally.unreachable[0]}")
    if tally.compared == 0 and not tally.problems:
        if tally.unreachable:
            raise Skip(f"the source videos are not reachable (e.g. {tally.unreachable[0]}): moved, or on another "
                       f"machine; features.json's source_root is {sourced[0][2]['source_root']}")
        raise Skip("no sampled feature file records its source video")
    worst = max(tally.errors) if tally.errors else math.nan
    threshold = max(limits.values())
    metrics = {"videos": tally.compared, "frames": tally.frames, "max_rel_err": worst, "threshold": threshold,
               "min_cosine": min(tally.cosines) if tally.cosines else math.nan,
               "unreachable": len(tally.unreachable), "unrecorded": tally.unrecorded}
    location = _extractor_location(sourced)
    if tally.problems:
        return Outcome(Status.FAIL, "; ".join(tally.problems), metrics, tally.evidence + tally.problems, location)
    return Outcome(Status.PASS, f"{tally.frames} frames of {tally.compared} video(s) equal CLIP's own features (max "
                   f"relative error {worst:.1e}, FAIL above {threshold:g})", metrics, tally.evidence, location)
