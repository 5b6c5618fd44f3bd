"""What a forward leaves behind, another class list, the temporal operation and the temperature, on our own
model: the clean cases the audits of issue 23 need targets of their own for, and a planted fault each.

- ``forward-state``: the class text features cached in a plain attribute by the first forward;
- ``class-list-response``: the model given a new class list in place, keeping the features it cached;
- ``temporal-operation``: our temporal transformer with its frame positions never added;
- ``temperature``: a trained logit scale that evaluation does not apply.
"""
from __future__ import annotations

import torch
from torch import nn

from videocoop.clip import TINY_MODEL
from videocoop.model import PromptLearner, VideoFeatureCLIP

from ..classes import rebuilt_for_classes
from ..core import AuditTarget
from .clean import seeded


class CachedText(VideoFeatureCLIP):
    """The class text features computed by the first forward and kept in a plain attribute."""

    def encode_text(self, classes=None):
        if getattr(self, "text_cache", None) is None:
            self.text_cache = super().encode_text(classes).detach()  # [n_cls, E] on the device of that forward
        return self.text_cache


def text_cache_left_behind(clip, tok, names) -> AuditTarget:
    model = seeded(CachedText, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class Retargeted(VideoFeatureCLIP):
    """Takes a new class list in place: a prompt learner over the new names, the learned context kept."""

    def retarget(self, names, clip, tok) -> None:
        old = self.prompt_learner
        with torch.random.fork_rng(devices=[]):
            self.prompt_learner = PromptLearner(names, clip, tok, n_ctx=old.n_ctx).to(old.ctx.device)
        with torch.no_grad():
            self.prompt_learner.ctx.copy_(old.ctx)


class StaleText(Retargeted):
    """The class text features cached as a buffer by the first forward and never dropped: right device, old classes."""

    def encode_text(self, classes=None):
        if getattr(self, "text_cache", None) is None:
            self.register_buffer("text_cache", super().encode_text(classes).detach(), persistent=False)
        return self.text_cache


def class_list_clean(clip, tok, names) -> AuditTarget:
    """Our model, built per class list: another list is a model built over it, the learned context carried over."""
    model = seeded(VideoFeatureCLIP, names, clip, tok, n_ctx=4)
    build = rebuilt_for_classes(lambda classes: VideoFeatureCLIP(classes, clip, tok, n_ctx=4), names)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0", for_classes=build)


def text_cache_stale_classes(clip, tok, names) -> AuditTarget:
    model = seeded(StaleText, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0",
                       for_classes=lambda m, classes: m.retarget(classes, clip, tok) or m)


def _trained_temporal(model):
    with torch.no_grad():  # trained: the zero-initialised output projection no longer zero
        model.temporal.out.weight.normal_(std=0.1, generator=torch.Generator().manual_seed(5))
    return model


class Unordered(nn.Module):
    """Our temporal transformer with its learned frame positions never added: the frames are a set to it."""

    def __init__(self, temporal: nn.Module):
        super().__init__()
        self.inner = temporal

    def forward(self, x, mask=None):
        h = self.inner.encoder(x, src_key_padding_mask=None if mask is None else ~mask)  # no pos_embedding
        return x + self.inner.out(h)


def temporal_clean(clip, tok, names) -> AuditTarget:
    """Our model with the temporal transformer (learned frame positions): attention in which order matters."""
    model = _trained_temporal(seeded(VideoFeatureCLIP, names, clip, tok, n_ctx=4, temporal_agg="transformer"))
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0", temporal_kind="attention")


def temporal_positions_dropped(clip, tok, names) -> AuditTarget:
    target = temporal_clean(clip, tok, names)
    target.model.temporal = Unordered(target.model.temporal)
    return target


class FixedEvalScale(VideoFeatureCLIP):
    """Trains its logit scale, but evaluates at the scale it started from."""

    trains_logit_scale = True

    def __init__(self, names, clip, tok, **kwargs):
        super().__init__(names, clip, tok, **kwargs)
        initial = self._buffers.pop("logit_scale")
        self.logit_scale = nn.Parameter(initial)
        self.fixed = float(initial.exp())

    def logits(self, video, text):
        scale = self.logit_scale.exp() if self.training else self.fixed
        return scale * video @ text.t()  # [B, n_cls]


def fixed_eval_temperature(clip, tok, names) -> AuditTarget:
    model = seeded(FixedEvalScale, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")
