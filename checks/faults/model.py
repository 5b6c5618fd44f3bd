"""Faults in the model around its text path: what trains and what a checkpoint keeps
(gradient-flow, checkpoint-roundtrip), precision (optimizer-step, and the runner's own fault: a
model that raises on its own data), the video path (temporal-padding, video-batch-independence)
and the logit scale (logit-scale)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import TINY_MODEL
from videocoop.model import VideoFeatureCLIP, masked_mean

from ..core import AuditTarget
from .clean import FRAMES, clean, seeded


# --- what trains and what a checkpoint keeps -------------------------------------------

def clip_trainable(clip, tok, names) -> AuditTarget:
    """CLIP's text tower left trainable."""
    target = clean(clip, tok, names)
    target.model.text_encoder.requires_grad_(True)
    return target


def own_clip_copy_trainable(clip, tok, names) -> AuditTarget:
    """The model holds its own copy of CLIP (a port calling clip.load inside the model), left trainable."""
    model = seeded(VideoFeatureCLIP, names, copy.deepcopy(clip), tok, n_ctx=4)
    model.text_encoder.requires_grad_(True)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class ContextOnlyCheckpoint(VideoFeatureCLIP):
    """Saves the context and forgets the temporal module."""

    def trainable_state_dict(self):
        return {k: v for k, v in super().trainable_state_dict().items() if k.startswith("prompt_learner.")}


def checkpoint_misses_temporal(clip, tok, names) -> AuditTarget:
    model = seeded(ContextOnlyCheckpoint, names, clip, tok, n_ctx=4, temporal_agg="transformer")
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class BatchNormVideo(VideoFeatureCLIP):
    """A learned BatchNorm on the video feature: its running statistics are buffers, which
    ``trainable_state_dict`` (parameters only) does not save."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bn = torch.nn.BatchNorm1d(self.embed_dim)

    def encode_video(self, features, mask=None):
        return torch.nn.functional.normalize(self.bn(super().encode_video(features, mask)), dim=-1)  # [B, E]


def checkpoint_misses_buffers(clip, tok, names) -> AuditTarget:
    """Trained a few steps (the running statistics moved); the factory is known, as with --target."""
    def build():
        return seeded(BatchNormVideo, names, clip, tok, n_ctx=4)

    model = build().train()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        model(torch.randn(8, FRAMES, model.embed_dim, generator=g) + 3.0)  # running stats move
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0", rebuild=build)


def nothing_trainable(clip, tok, names) -> AuditTarget:
    """Every parameter frozen: the checkpoint is empty."""
    target = clean(clip, tok, names)
    target.model.requires_grad_(False)
    return target


# --- precision -------------------------------------------------------------------------

class HalfTextPort(VideoFeatureCLIP):
    """CoOp's fp16 port: its text features come out in CLIP's half precision (CoOp's text
    encoder returns ``x.type(self.dtype)``) and meet the float32 video features read from
    disk without a cast, so the forward raises a dtype mismatch on its own data."""

    def encode_text(self, classes=None):
        return super().encode_text(classes).half()  # [n_cls, E] fp16


def fp16_text_float_features(clip, tok, names) -> AuditTarget:
    """A model that raises on its own data: every audit that runs it must FAIL naming the
    model's exception, the frame in its code and the fix, never ERROR ("the audit crashed")."""
    model = seeded(HalfTextPort, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def fp16_context_adam(clip, tok, names) -> AuditTarget:
    """CoOp's fp16 recipe (16 context vectors, kept in half precision) trained with Adam at CoOp's
    lr: small squared gradients underflow and Adam's eps (1e-8) is 0 in fp16, so the first step
    divides by zero (inf) and the next loss is NaN."""
    model = seeded(VideoFeatureCLIP, names, clip, tok, n_ctx=16)
    pl = model.prompt_learner
    pl.ctx = nn.Parameter(pl.ctx.detach().half())  # [n_ctx, width] fp16
    target = AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")
    target.make_optimizer = lambda m: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    return target


def fp16_context_sgd(clip, tok, names) -> AuditTarget:
    """The fp16 context with CoOp's own SGD: finite here, but its updates round away in fp16."""
    target = fp16_context_adam(clip, tok, names)
    target.make_optimizer = lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=2e-3,
                                                      momentum=0.9)
    return target


# --- the video path and the logit scale ------------------------------------------------

class MaskIgnored(VideoFeatureCLIP):
    """Takes the padding mask and drops it: the temporal aggregation counts zero frames."""

    def encode_video(self, features, mask=None):
        return super().encode_video(features, None)  # [B, E]


def padding_mask_ignored(clip, tok, names) -> AuditTarget:
    """The mask dropped before a plain mean: harmless here (the mean of a zero-padded video is the
    real mean rescaled, and the model L2-normalises it), so temporal-padding must pass it."""
    model = seeded(MaskIgnored, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def transformer_mask_ignored(clip, tok, names) -> AuditTarget:
    """A trained temporal transformer run without its key padding mask: real frames attend to the zeros."""
    def build():
        model = MaskIgnored(names, clip, tok, n_ctx=4, temporal_agg="transformer")
        torch.nn.init.normal_(model.temporal.out.weight, std=0.1)  # trained: no longer the identity
        return model

    return AuditTarget(seeded(build), names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def max_over_padding(clip, tok, names) -> AuditTarget:
    """A max over frames that never masks the zero frames of padded videos."""
    model = seeded(MaskIgnored, names, clip, tok, n_ctx=4, temporal_agg="max")
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class NoMaskArgument(VideoFeatureCLIP):
    """A forward without a mask (the seed's ``model(features)``): padded videos are averaged with their zeros."""

    def forward(self, features):
        return super().forward(features)


def no_mask_argument(clip, tok, names) -> AuditTarget:
    """A max over frames in a forward that takes no mask: padded videos are maxed with their zeros."""
    model = seeded(NoMaskArgument, names, clip, tok, n_ctx=4, temporal_agg="max")
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class BatchCentred(VideoFeatureCLIP):
    """Centres the video features on their batch mean ("normalising" over dim 0): each video's
    logits depend on the other videos of its batch."""

    def encode_video(self, features, mask=None):
        v = super().encode_video(features, mask)  # [B, E]
        return F.normalize(v - v.mean(dim=0, keepdim=True), dim=-1)


def batch_mean_centring(clip, tok, names) -> AuditTarget:
    model = seeded(BatchCentred, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def batchnorm_video(clip, tok, names) -> AuditTarget:
    """A BatchNorm on the video features: batch statistics in training mode."""
    model = seeded(BatchNormVideo, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


class UnnormalisedVideo(VideoFeatureCLIP):
    """Averages the raw frame features and never normalises the result."""

    def encode_video(self, features, mask=None):
        return masked_mean(features.float(), mask)  # [B, E], norm ~ that of a CLIP feature


def unnormalised_video(clip, tok, names) -> AuditTarget:
    model = seeded(UnnormalisedVideo, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def scale_exponentiated_twice(clip, tok, names) -> AuditTarget:
    """Stores ``clip_model.logit_scale.exp()`` (100) where the forward applies exp again."""
    target = clean(clip, tok, names)
    target.model.logit_scale = clip.logit_scale.detach().float().exp()  # the buffer now holds 100
    return target


class ScaleWithoutExp(VideoFeatureCLIP):
    """Multiplies by the stored log-scale (4.6), not its exp (100)."""

    def logits(self, video, text):
        return self.logit_scale * video @ text.t()  # [B, n_cls]


def scale_without_exp(clip, tok, names) -> AuditTarget:
    model = seeded(ScaleWithoutExp, names, clip, tok, n_ctx=4)
    return AuditTarget(model, names, clip, tok, clip_name=TINY_MODEL, weights="random:0")


def logit_scale_trainable(clip, tok, names) -> AuditTarget:
    """CLIP's logit_scale copied as a trainable parameter (no model.trains_logit_scale)."""
    target = clean(clip, tok, names)
    model = target.model
    del model._buffers["logit_scale"]
    model.logit_scale = nn.Parameter(clip.logit_scale.detach().float().clone())
    return target
