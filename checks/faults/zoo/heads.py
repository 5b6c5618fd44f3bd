"""Temporal heads on a CoOp text path: a BatchNorm head (running statistics that a training forward
updates by design), a temporal transformer computing in bf16 with its padding masked, and a head that
trims the batch's trailing padding with a host read (correct everywhere; a sync on CUDA).

Planted: a BatchNorm built without running statistics (``track_running_stats=False``, so evaluation
normalises with the batch's own statistics and a video's logits depend on its batch-mates), and the
bf16 transformer run without its key padding mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import CoOpVideo, masked_mean, videos
from .target import make_target


class BatchNormHead(CoOpVideo):
    def __init__(self, clip, tok, names, track_running_stats: bool = True):
        super().__init__(clip, tok, names)
        self.head = nn.BatchNorm1d(embed_dim(clip), track_running_stats=track_running_stats)

    def encode_video(self, features, mask=None):
        return F.normalize(self.head(masked_mean(F.normalize(features, dim=-1), mask)), dim=-1)  # [B, E]


class Bf16Temporal(nn.Module):
    """Self-attention over frames in bf16, the padded frames masked out as keys."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.to(torch.bfloat16)

    def forward(self, x, mask=None):
        h = self.norm(x.to(torch.bfloat16))  # [B, T, D] bf16
        padding = None if mask is None else ~mask
        return x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0].float()  # [B, T, D] fp32


class Bf16Head(CoOpVideo):
    def __init__(self, clip, tok, names):
        super().__init__(clip, tok, names)
        self.temporal = Bf16Temporal(embed_dim(clip))

    def encode_video(self, features, mask=None):
        x = self.temporal(F.normalize(features, dim=-1), mask)
        return F.normalize(masked_mean(x, mask), dim=-1)  # [B, E]


class Bf16MaskDropped(Bf16Head):
    def encode_video(self, features, mask=None):
        x = self.temporal(F.normalize(features, dim=-1))  # the padding attends and is attended to
        return F.normalize(masked_mean(x, mask), dim=-1)


def _head_target(model, clip, tok, names, what: str):
    return make_target(model, names, clip, tok, videos(clip, names), description=f"CoOp prompts with {what}")


def batchnorm_head(clip, tok, names):
    return _head_target(seeded(BatchNormHead, clip, tok, names), clip, tok, names, "a BatchNorm temporal head")


def batchnorm_head_batch_statistics(clip, tok, names):
    model = seeded(BatchNormHead, clip, tok, names, track_running_stats=False)
    return _head_target(model, clip, tok, names, "a BatchNorm head without running statistics")


def _trained(model):
    with torch.no_grad():  # trained: the attention no longer close to the identity
        for p in model.temporal.attn.parameters():
            p.normal_(std=0.2, generator=torch.Generator().manual_seed(3))
    return model


def _bf16_target(cls, clip, tok, names, what):
    target = _head_target(_trained(seeded(cls, clip, tok, names)), clip, tok, names, what)
    target.temporal_kind = "attention-unordered"  # no frame positions: the frames are a set to it (model.temporal)
    return target


def bf16_head(clip, tok, names):
    return _bf16_target(Bf16Head, clip, tok, names, "a masked temporal attention in bf16")


def bf16_head_mask_dropped(clip, tok, names):
    return _bf16_target(Bf16MaskDropped, clip, tok, names, "a bf16 temporal attention run without its padding mask")


class TrimmedHead(CoOpVideo):
    """Cuts the frames after the batch's longest video, the length read on the host (``int(...)``):
    right on every device, a sync on CUDA; on the meta device the read must get the real length."""

    def encode_video(self, features, mask=None):
        if mask is None:
            mask = features.abs().sum(dim=-1) > 0  # [B, T]: zero frames are padding
        T = int(mask.sum(dim=1).max())  # the longest video, read back to the host
        frames = list(F.normalize(features[:, :T], dim=-1).unbind(dim=1))  # T frames of [B, D]
        return F.normalize(masked_mean(torch.stack(frames, dim=1), mask[:, :T]), dim=-1)  # [B, E]


def host_trim(clip, tok, names):
    return _head_target(seeded(TrimmedHead, clip, tok, names), clip, tok, names,
                        "a head that trims padding with a host read")
