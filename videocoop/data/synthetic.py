"""Planted-prompt synthetic features: data whose right answer is a known context.

A secret context (random vectors, not any phrase) goes through the chosen CLIP's text
tower in the CoOp layout to give one text feature per class; every frame of a video is
that feature plus a slow temporal drift and per-frame noise. A trainer that learns the
context well enough to recover the secret class features classifies the videos; the
initial phrase of the shipped prompts file does much worse. That gap is what
``make train`` shows.
"""
from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..clip.loader import load_clip, weights_id
from ..model.prompts_file import PromptsFile
from ..model.video_clip import VideoFeatureCLIP
from ..utils.errors import VideoCoopError
from ..utils.files import write_json, write_text
from .classlists import UCF101
from .features import read_feature_info, write_feature_info
from .layout import CLASSNAMES_FILE

#: The prompts file's starting phrase; the secret context is random, never this phrase.
INITIAL_PROMPT = "a video of a person"
SOURCE = "videocoop synth"  # features.json "source": marks folders synth may replace


def default_classnames(n_classes: int) -> list[str]:
    """``n_classes`` UCF101 names spread evenly over the alphabet (all 101 for ``n >= 101``)."""
    if n_classes < 1:
        raise VideoCoopError(f"n_classes must be >= 1, got {n_classes}")
    if n_classes >= len(UCF101):
        return list(UCF101)
    step = len(UCF101) / n_classes
    return [UCF101[int(i * step)] for i in range(n_classes)]


def synthesize(
    out_dir: str | os.PathLike,
    *,
    classnames: Sequence[str] | None = None,
    n_classes: int = 20,
    clip_model: str = "ViT-B-32",
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    clip_seed: int = 0,
    train_per_class: int = 40,
    val_per_class: int = 24,
    num_frames: int = 8,
    max_frames: int | None = None,
    seed: int = 0,
    noise: float = 12.0,
    drift: float = 1.0,
    secret_std: float = 0.1,
    initial_prompt: str = INITIAL_PROMPT,
) -> dict:
    """Write planted-prompt synthetic features in the standard layout.

    Args:
        out_dir: gets ``train/`` and ``val/`` (class folders of ``.pt`` files,
            ``features.json``, ``classnames.txt``) and ``custom_prompts.json``. An
            earlier synth output there is replaced; any other data there is refused.
        classnames: the classes; default :func:`default_classnames` of ``n_classes``.
        n_classes: how many UCF101 names when ``classnames`` is None.
        clip_model, pretrained, checkpoint, clip_seed: the CLIP whose text tower makes
            the class features (random ViT-B-32 weights from seed 0 by default), recorded
            in ``features.json`` so training picks the same one.
        train_per_class, val_per_class: videos per class in each split.
        num_frames: frames per video; with ``max_frames`` each video draws its length
            from ``[num_frames, max_frames]`` (exercises padding and masking).
        seed: draws the secret context, noise and drift.
        noise: per-frame Gaussian noise, relative to the unit class feature (the norm of
            the noise vector); the frame mean averages it down by sqrt(T).
        drift: a per-video direction the frames walk along from start to end.
        secret_std: standard deviation of the secret context vectors (token embeddings
            of a random ViT-B-32 have std 0.02; larger moves the class features further
            from any phrase's).
        initial_prompt: the phrase written to ``custom_prompts.json``; the secret has as
            many context vectors as its tokens, so training can reach the secret.

    Returns:
        A dict with the paths (``train``, ``val``, ``prompts_file``), ``classnames``,
        ``info`` (features.json), ``n_ctx`` and ``oracle_val_top1``: the accuracy of the
        secret class features on the validation videos (the best a learner can expect).
    """
    out = Path(out_dir)
    names = list(classnames) if classnames is not None else default_classnames(n_classes)
    if max_frames is not None and max_frames < num_frames:
        raise VideoCoopError(f"max_frames ({max_frames}) must be >= num_frames ({num_frames})")
    for key, n in (("train_per_class", train_per_class), ("val_per_class", val_per_class), ("num_frames", num_frames)):
        if n < 1:
            raise VideoCoopError(f"{key} must be >= 1, got {n}")
    for split in ("train", "val"):
        _clear_previous(out / split)
    with warnings.catch_warnings():
        # Random weights are the point here; training reports them when it loads the same CLIP.
        warnings.simplefilter("ignore")
        clip, tokenizer = load_clip(clip_model, pretrained=pretrained, checkpoint=checkpoint, seed=clip_seed)
    g = torch.Generator().manual_seed(seed)  # one stream: the secret, then every video in turn
    text, n_ctx = _planted_text_features(names, clip, tokenizer, initial_prompt, secret_std, g)  # [n_cls, E]
    info = {
        "clip_model": clip_model,
        "weights": weights_id(pretrained, checkpoint, clip_seed),
        "num_frames": num_frames if max_frames is None else None,
        "dim": text.shape[1],
        "source": SOURCE,
        "synth": {"seed": seed, "noise": noise, "drift": drift, "secret_std": secret_std, "n_ctx": n_ctx,
                  "frames": [num_frames, max_frames or num_frames]},
    }

    def video(c: int) -> torch.Tensor:  # [T, E] of class c, drawn from g in file order
        T = num_frames if max_frames is None else int(torch.randint(num_frames, max_frames + 1, (1,), generator=g))
        return _video(text[c], T, noise, drift, g)

    _write_split(out / "train", names, info, train_per_class, video, text)
    oracle_val_top1 = _write_split(out / "val", names, info, val_per_class, video, text)
    prompts = PromptsFile(
        default_prompt=initial_prompt,
        description=f"videocoop synth: {len(names)} classes; the planted context is random, not this phrase",
    )
    prompts_file = write_json(out / "custom_prompts.json", prompts.to_dict())
    return {
        "train": str(out / "train"),
        "val": str(out / "val"),
        "prompts_file": str(prompts_file),
        "classnames": names,
        "info": info,
        "n_ctx": n_ctx,
        "oracle_val_top1": oracle_val_top1,
    }


def _planted_text_features(names: Sequence[str], clip, tokenizer, initial_prompt: str, secret_std: float,
                          g: torch.Generator) -> tuple[torch.Tensor, int]:
    """The class features a secret context gives, ``[n_cls, E]`` unit rows, and the context
    length (the initial phrase's token count, so training can reach the secret).

    The secret is ``n_ctx`` random vectors of std ``secret_std`` drawn from ``g``, put through
    CLIP's text tower in the CoOp layout; the component every class shares is removed.
    """
    n_ctx = VideoFeatureCLIP(names[:1], clip, tokenizer, ctx_init=initial_prompt).prompt_learner.n_ctx
    secret = VideoFeatureCLIP(names, clip, tokenizer, n_ctx=n_ctx)
    with torch.no_grad():
        secret.prompt_learner.ctx.copy_(torch.randn(secret.prompt_learner.ctx.shape, generator=g) * secret_std)
        text = secret.encode_text()  # [n_cls, E], unit norm
    # Keep only what tells the classes apart: CLIP text features share a large common
    # component (inter-class cosine ~0.9 with random weights) that carries no label, and
    # leaving it in would drown the class signal at any noise level that hides the labels
    # from the initial prompts.
    return F.normalize(text - text.mean(0), dim=-1), n_ctx  # [n_cls, E]


def _write_split(root: Path, names: Sequence[str], info: dict, per_class: int, video: Callable[[int], torch.Tensor],
                 text: torch.Tensor) -> float:
    """Write one split (class folders of ``video(c)``'s, ``classnames.txt``, ``features.json``);
    returns the top-1 of the secret class features ``text`` ``[n_cls, E]`` on its videos."""
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / CLASSNAMES_FILE, "\n".join(names) + "\n")
    write_feature_info(root, info)
    correct = 0
    for c, name in enumerate(names):
        (root / name).mkdir(exist_ok=True)
        for v in range(per_class):
            frames = video(c)  # [T, E]
            torch.save(frames, root / name / f"v_{name}_{root.name}{v:03d}.pt")
            mean = F.normalize(F.normalize(frames, dim=-1).mean(0), dim=0)  # [E]
            correct += int((text @ mean).argmax()) == c
    return correct / max(len(names) * per_class, 1)


def _clear_previous(root: Path) -> None:
    """Remove an earlier synth output (so no stale class is left); refuse to touch other data."""
    if not root.exists():
        return
    info = read_feature_info(root) if root.is_dir() else None
    if info is None or info.get("source") != SOURCE:
        raise VideoCoopError(f"{root} exists and was not written by videocoop synth; choose another --out")
    shutil.rmtree(root)


def _video(text: torch.Tensor, T: int, noise: float, drift: float, g: torch.Generator) -> torch.Tensor:
    """Frames ``[T, E]`` around one class feature ``[E]``: drift, noise, an arbitrary norm."""
    E = text.shape[0]
    direction = torch.randn(E, generator=g) / math.sqrt(E)  # [E], norm ~1
    ramp = torch.linspace(0, 1, T)[:, None]  # [T, 1]: the video drifts from start to end
    eps = torch.randn(T, E, generator=g) / math.sqrt(E)  # [T, E], rows of norm ~1
    scale = 5 + 10 * torch.rand(1, generator=g)  # raw CLIP features are not unit norm
    return (scale * (text + drift * ramp * direction + noise * eps)).contiguous()  # [T, E]
