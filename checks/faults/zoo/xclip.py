"""Text conditioned on each video, in the X-CLIP style (``microsoft/VideoX``, ``X-CLIP/models/xclip.py``):
the class text is CLIP's features of the bare class names (no learned context); a prompt generator lets
each class's text attend to the video's frames, so every video is scored against its own text features
``[B, n_cls, E]``; a multi-frame integration transformer (learned frame positions) makes the video feature,
and ``encode_video`` returns the pair ``(video feature, frame features)``.

Planted, as upstream's ``cache_text`` has them: the class features cached in a plain attribute by the
first forward (``.to()`` leaves it behind), a cache that keeps the class list it was made for, and
``self.eval() ... self.train()`` around the text inside the forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import IdsTextTower, masked_mean, videos
from .target import make_target

#: The prompt generator's output weight (X-CLIP starts it at 1e-4; larger here so the conditioning shows
#: on untrained weights).
ALPHA = 0.1


class FrameTransformer(nn.Module):
    """X-CLIP's multi-frame integration transformer: learned frame positions, one self-attention layer
    over the frames (padding masked as keys), added back to the frames: ``[B, T, D]`` -> ``[B, T, D]``."""

    def __init__(self, dim: int, heads: int = 4, max_frames: int = 32):
        super().__init__()
        self.positions = nn.Parameter(torch.empty(max_frames, dim).normal_(std=0.02))
        self.layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.layer(x + self.positions[: x.shape[1]], src_key_padding_mask=None if mask is None else ~mask)
        return x + h


class PromptGenerator(nn.Module):
    """Each class's text ``[B, n_cls, E]`` attends to the video's frames ``[B, T, E]``; returns the shift."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.alpha = nn.Parameter(torch.full((dim,), ALPHA))

    def forward(self, text, frames, mask=None):
        v = self.norm(frames)
        q = text + self.attn(text, v, v, key_padding_mask=None if mask is None else ~mask, need_weights=False)[0]
        return self.alpha * (q + self.mlp(q))  # [B, n_cls, E]


class XClipVideo(nn.Module):
    def __init__(self, clip, tok, names):
        super().__init__()
        dim = embed_dim(clip)
        self.text = IdsTextTower(clip).requires_grad_(False)
        self.register_buffer("class_tokens", tok([n.replace("_", " ") for n in names]))  # [n_cls, 77]: the names
        self.mit = FrameTransformer(dim)
        self.prompts_generator = PromptGenerator(dim)
        self.register_buffer("logit_scale", clip.logit_scale.detach().clone())
        self.classes_version = 0  # a new class list bumps it

    def set_classes(self, tokens: torch.Tensor) -> None:
        self.class_tokens = tokens.to(self.class_tokens.device)
        self.classes_version += 1

    def class_text(self) -> torch.Tensor:
        return self.text.encode(self.class_tokens)  # [n_cls, E]

    def cached_text(self) -> torch.Tensor:
        """The class text the forward uses: computed in every forward (CLIP is frozen, so it is cheap to
        keep right: a cache would have to follow the device and the class list)."""
        return self.class_text()

    def encode_video(self, features, mask=None):
        """``(video [B, E], frames [B, T, E])``, as upstream returns them."""
        frames = F.normalize(features, dim=-1)  # [B, T, E]
        return masked_mean(self.mit(frames, mask), mask), frames

    def condition(self, text, frames, mask=None) -> torch.Tensor:
        text = text.unsqueeze(0).expand(frames.shape[0], -1, -1)  # [B, n_cls, E]
        return text + self.prompts_generator(text, frames, mask)

    def video_text(self, features, mask=None) -> torch.Tensor:
        """Each video's class text features ``[B, n_cls, E]`` (unnormalised)."""
        return self.condition(self.class_text(), self.encode_video(features, mask)[1], mask)

    def forward(self, features, mask=None):
        video, frames = self.encode_video(features, mask)
        text = F.normalize(self.condition(self.cached_text(), frames, mask), dim=-1)  # [B, n_cls, E]
        return self.logit_scale.exp() * torch.einsum("bd,bkd->bk", F.normalize(video, dim=-1), text)


class CacheLeftBehind(XClipVideo):
    """Upstream's ``self.cache_text_features``: a plain attribute the first forward fills (kept per class list)."""

    def cached_text(self):
        if getattr(self, "cache_text_features", None) is None or self.cache_version != self.classes_version:
            with torch.no_grad():
                self.cache_text_features = self.class_text()  # [n_cls, E], on the device of that forward
            self.cache_version = self.classes_version
        return self.cache_text_features


class StaleClassList(XClipVideo):
    """Upstream's ``if self.cache_text_features is None``: made once (here as a buffer, so it moves with the
    model) and kept whatever class list comes after."""

    def cached_text(self):
        if getattr(self, "text_cache", None) is None:
            with torch.no_grad():
                self.register_buffer("text_cache", self.class_text(), persistent=False)
        return self.text_cache


class ModeFlip(XClipVideo):
    """Upstream's ``cache_text``: ``self.eval()``, the text, ``self.train()``: after ``model.eval(); model(x)``
    the model is in training mode."""

    def cached_text(self):
        self.eval()
        with torch.no_grad():
            text = self.class_text()
        self.train()
        return text


def _target(cls, clip, tok, names):
    return make_target(
        seeded(cls, clip, tok, names), names, clip, tok, videos(clip, names),
        description="text conditioned on each video (X-CLIP): the bare class names through CLIP, a prompt "
                    "generator attending to the frames, encode_video -> (video, frames)",
        token_ids=lambda m: m.class_tokens, encode_text=lambda m, prompts, ids: m.text(prompts, ids),
        encode_video=lambda m, x, mask: m.encode_video(x, mask)[0],
        text_features=lambda m, x, mask: m.video_text(x, mask),  # [B, n_cls, E]
        temporal=lambda m, x: m.mit(x), temporal_kind="attention",
        for_classes=lambda m, classes: m.set_classes(tok([c.replace("_", " ") for c in classes])) or m,
    )


def xclip(clip, tok, names):
    return _target(XClipVideo, clip, tok, names)


def xclip_cache_left_behind(clip, tok, names):
    return _target(CacheLeftBehind, clip, tok, names)


def xclip_stale_class_list(clip, tok, names):
    return _target(StaleClassList, clip, tok, names)


def xclip_mode_flip(clip, tok, names):
    return _target(ModeFlip, clip, tok, names)
