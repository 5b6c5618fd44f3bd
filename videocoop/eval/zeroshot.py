"""The zero-shot baseline: frozen CLIP with hand-written templates, no training.

Each class's text feature is CLIP's own ``encode_text`` of a template with the class's
words in it ("a video of a person {}."). Several templates are ensembled as CLIP does:
each template's class features normalised, averaged over templates, renormalised. A video
is the mean of its normalised frame features, normalised (``temporal_agg="mean"`` of
:class:`~videocoop.model.VideoFeatureCLIP`), and logits are CLIP's scaled cosines. The
scores go through the trainer's own :func:`~videocoop.train.engine.validate`, so top-1, top-5 and
per-class accuracy mean what they mean for a trained run.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..clip.loader import PRECISIONS, embed_dim, load_clip_of, weights_id_of
from ..data.features import check_feature_info, read_feature_info
from ..data.layout import INFO_FILE
from ..data.packed import open_feature_dataset
from ..data.protocols import harmonic_mean, split_classes
from ..data.samples import collate_samples
from ..data.sampling import MAX_FRAMES
from ..model.prompt_learner import class_words
from ..model.prompts_file import PromptsFile
from ..model.video_clip import masked_mean
from ..train.config import resolve_clip
from ..train.engine import autocast, validate
from ..train.record import class_list_hash, frames_record
from ..utils.config import config_from_dict, known_fields
from ..utils.distributed import resolve_device
from ..utils.errors import InputError, VideoCoopError
from ..utils.files import write_json
from ..utils.readers import read_lines

log = logging.getLogger(__name__)

#: Without --templates: one template, the phrase `videocoop synth`'s prompts file starts from.
DEFAULT_TEMPLATES = ("a video of a person {}.",)
RESULT_FILE = "zeroshot.json"


@dataclass
class ZeroShotConfig:
    """Everything a zero-shot evaluation depends on: one field per ``videocoop eval --zero-shot`` flag."""

    feature_dir: str | None = None  # the features to score (a validation split): <dir>/<class>/<video>.pt|.npy
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))  # "{}" takes the class words; several are ensembled
    templates_file: str | None = None  # templates, one per line (wins over templates)
    initial_prompts_file: str | None = None  # only its display_names are used: the class words training puts in prompts
    base_classes: str | None = None  # also report base, novel and HM: half (CoCoOp) or a file of base class names
    output_dir: str = "output/zeroshot"  # zeroshot.json goes here
    num_frames: int | None = None  # sample this many frames per video (segment middles); None: all, padded and masked
    batch_size: int = 64  # evaluation only: any size gives the same numbers
    clip_model: str | None = None  # open_clip name; None: from features.json
    pretrained: str | None = None  # open_clip pretrained tag in the local cache; None: from features.json
    clip_checkpoint: str | None = None  # local CLIP weights file
    clip_seed: int = 0  # seed of random CLIP weights (features.json's random:<seed> wins)
    precision: str = "fp32"  # fp32 | fp16 | bf16 | amp, as for training
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N | mps
    overwrite: bool = False  # replace an earlier zeroshot.json in output_dir

    @classmethod
    def from_dict(cls, d: Mapping) -> ZeroShotConfig:
        """Build from a dict, rejecting unknown keys (naming the closest and the valid ones)."""
        return config_from_dict(cls, d, what="zero-shot config")

    def check(self) -> None:
        """Raises:
            VideoCoopError: naming the bad value and the valid options.
        """
        if not self.feature_dir:
            raise VideoCoopError("no features to score: pass --feature-dir DIR (a folder of <class>/<video>.pt|.npy)")
        for key in ("feature_dir", "templates_file", "initial_prompts_file"):
            path = getattr(self, key)
            if path and not os.path.exists(path):
                raise VideoCoopError(f"{key.replace('_', '-')} {path} does not exist")
        if self.precision not in PRECISIONS:
            raise VideoCoopError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        for key in ("batch_size", "num_frames"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise VideoCoopError(f"{key} must be >= 1, got {value}")
        if self.num_frames is not None and self.num_frames > MAX_FRAMES:
            raise VideoCoopError(f"num_frames must be at most {MAX_FRAMES}, got {self.num_frames}")

    def resolved_templates(self) -> list[str]:
        """The templates to ensemble, checked.

        Raises:
            VideoCoopError: an empty list, or a template without exactly one ``{}``.
        """
        templates = list(self.templates)
        if self.templates_file:
            templates = read_lines(self.templates_file)
        example = f"e.g. {DEFAULT_TEMPLATES[0]!r}"
        if not templates:
            problem = f"no templates; write one per line with {{}} where the class name goes, {example}"
            raise InputError(self.templates_file, problem) if self.templates_file else VideoCoopError(problem)
        for t in templates:
            if t.count("{}") != 1 or t.replace("{}", "").count("{") or t.replace("{}", "").count("}"):
                problem = f"template {t!r} must hold exactly one {{}} (where the class name goes) and no other braces"
                if self.templates_file:
                    raise InputError(self.templates_file, problem, fix=example)
                raise VideoCoopError(f"{problem}, {example}")
        return templates


class TemplateClassifier(nn.Module):
    """Fixed class text features scored against mean-pooled frames: the trainer's model
    interface (``encode_text``, ``encode_video``, ``logits``) with nothing learned."""

    def __init__(self, text: torch.Tensor, logit_scale: torch.Tensor, classnames: Sequence[str]):
        super().__init__()
        self.register_buffer("text", text)  # [n_cls, E], unit rows
        self.register_buffer("logit_scale", logit_scale.detach().float().clone())
        self.classnames = list(classnames)

    def encode_text(self) -> torch.Tensor:
        return self.text

    def encode_video(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """As ``VideoFeatureCLIP(temporal_agg="mean").encode_video``: frames normalised, averaged, normalised."""
        x = F.normalize(features.float(), dim=-1)  # [B, T, D]
        return F.normalize(masked_mean(x, None if mask is None else mask.bool()), dim=-1)  # [B, E]

    def logits(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * video @ text.t()  # [B, n_cls]


@torch.no_grad()
def template_features(clip_model: nn.Module, tokenizer, words: Sequence[str], templates: Sequence[str],
                      device: torch.device, precision: str = "fp32") -> torch.Tensor:
    """Class text features ``[n_cls, E]`` (unit rows) from CLIP's ``encode_text``, ensembled
    over ``templates`` as CLIP's prompt ensembling: per template normalised, averaged,
    renormalised."""
    total = None
    for template in templates:
        tokens = tokenizer([template.format(w) for w in words]).to(device)  # [n_cls, L]
        with autocast(device, precision):
            text = F.normalize(clip_model.encode_text(tokens).float(), dim=-1)  # [n_cls, E]
        total = text if total is None else total + text
    return F.normalize(total / len(templates), dim=-1)


def zero_shot(cfg: ZeroShotConfig, classnames: Sequence[str] | None = None) -> dict:
    """Score ``cfg.feature_dir`` with hand-written templates; write ``output_dir/zeroshot.json``.

    Args:
        cfg: the settings.
        classnames: the class list in label order (a training split's, so ``half`` splits
            the classes as training does); None: the feature folder's own.

    Returns:
        The result as written: ``top1``, ``top5``, ``loss``, ``per_class``, the templates,
        the CLIP; with ``base_classes`` also ``base_top1``, ``novel_top1``, ``hm`` and the
        class lists.

    Raises:
        VideoCoopError: bad settings, data or templates; ``zeroshot.json`` already there
            (without ``overwrite``).
    """
    cfg.check()
    templates = cfg.resolved_templates()
    out = Path(cfg.output_dir) / RESULT_FILE
    if out.is_file() and not cfg.overwrite:
        raise VideoCoopError(f"{out} holds a zero-shot result already: pass --overwrite to replace it, or choose "
                             f"another --output-dir")
    device = resolve_device(cfg.device)
    info = read_feature_info(cfg.feature_dir)
    cfg = resolve_clip(cfg, info)
    clip_model, tokenizer = load_clip_of(cfg, device, precision="fp32" if cfg.precision == "amp" else cfg.precision)
    weights = weights_id_of(cfg)
    dim = embed_dim(clip_model)
    if info is not None:
        check_feature_info(info, cfg.clip_model, weights, dim, where=str(Path(cfg.feature_dir) / INFO_FILE))
    dataset = open_feature_dataset(cfg.feature_dir, classnames=classnames, num_frames=cfg.num_frames, dim=dim)
    names = list(dataset.classnames)
    display = {}
    if cfg.initial_prompts_file:
        prompts = PromptsFile.load(cfg.initial_prompts_file)
        prompts.check_classes(names)
        display = prompts.display_names
    words = [display.get(c) or class_words(c) for c in names]
    text = template_features(clip_model, tokenizer, words, templates, device, cfg.precision)  # [n_cls, E]

    def score(subset, idx: list[int]):
        model = TemplateClassifier(text[idx], clip_model.logit_scale, [names[i] for i in idx])
        loader = DataLoader(subset, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_samples)
        return validate(model, loader, device, model.classnames, precision=cfg.precision)

    every = score(dataset, list(range(len(names))))
    result = {"data": str(cfg.feature_dir), "clip_model": cfg.clip_model, "weights": weights, "templates": templates,
              "classnames": names, "videos": len(dataset), "loss": every.loss, "top1": every.top1, "top5": every.top5,
              "per_class": every.per_class,
              "protocol": {"model_selection": "none (frozen CLIP, nothing trained)", **frames_record(cfg.num_frames),
                           "templates": templates, "classes": len(names), "classes_sha256": class_list_hash(names)}}
    log.info(f"zero-shot CLIP {cfg.clip_model} ({weights}), {len(templates)} template(s), {len(names)} classes, "
             f"{len(dataset)} videos of {cfg.feature_dir}: top1 {every.top1:.2f}% top5 {every.top5:.2f}%")
    if cfg.base_classes:
        base, novel = split_classes(names, cfg.base_classes)
        parts = {}
        for side, classes in (("base", base), ("novel", novel)):
            keep = set(classes)
            subset = dataset.subset([i for i, y in enumerate(dataset.labels) if names[y] in keep], classnames=classes)
            if len(subset) == 0:
                raise VideoCoopError(f"{cfg.feature_dir} has no videos of the {side} classes {classes}")
            parts[side] = score(subset, [names.index(c) for c in classes])
        result.update(base_top1=parts["base"].top1, novel_top1=parts["novel"].top1,
                      hm=harmonic_mean(parts["base"].top1, parts["novel"].top1), base_classes=base, novel_classes=novel)
        log.info(f"zero-shot base-to-novel: base {result['base_top1']:.2f}% ({len(base)} classes), novel "
                 f"{result['novel_top1']:.2f}% ({len(novel)} classes), HM {result['hm']:.2f}%")
    for c, acc in every.per_class.items():
        log.info(f"  {c}: {acc:.1f}%")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    log.info(f"wrote {out}")
    return result


def config_from_train(train_cfg, **overrides) -> ZeroShotConfig:
    """The zero-shot settings that match a training config: its validation folder, CLIP,
    display names, base classes, frames and device."""
    shared = known_fields(ZeroShotConfig, train_cfg.to_dict())
    d = {k: v for k, v in shared.items() if k not in ("feature_dir", "output_dir", "overwrite")}
    d["feature_dir"] = train_cfg.val_feature_dir
    if d.get("precision") is None:
        d["precision"] = "fp32"
    return ZeroShotConfig.from_dict({**d, **overrides})


__all__ = ["DEFAULT_TEMPLATES", "RESULT_FILE", "TemplateClassifier", "ZeroShotConfig", "config_from_train",
           "template_features", "zero_shot"]
