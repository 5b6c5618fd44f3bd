"""No learned context: a hand-written template per class through CLIP's text tower, as zero-shot video
CLIP baselines do (CLIP's ``zeroshot_classifier``; ViFi-CLIP's and X-CLIP's zero-shot evaluation), with a
temporal shift over the frames (TSM's ``shift``: a fold of the channels read from the previous frame,
a fold from the next) and a small residual adapter per frame as all that trains.

Planted, as zero-shot code has it: the class features computed once when the model is built
(``zeroshot_weights``), so a model given a new class list keeps scoring the old one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import IdsTextTower, masked_mean, videos
from .target import make_target

TEMPLATE = "a video of a person {}."


def template_tokens(tok, names) -> torch.Tensor:
    return tok([TEMPLATE.format(n.replace("_", " ")) for n in names])  # [n_cls, 77]


class TemporalShift(nn.Module):
    """``[B, T, D]`` -> ``[B, T, D]``: channels ``[0, f)`` from the previous frame, ``[f, 2f)`` from the next
    (zeros past the ends), the rest in place; then a residual linear adapter per frame."""

    def __init__(self, dim: int, fold_div: int = 8):
        super().__init__()
        self.fold = dim // fold_div
        self.adapter = nn.Linear(dim, dim)
        nn.init.normal_(self.adapter.weight, std=0.02)
        nn.init.zeros_(self.adapter.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fold
        out = torch.zeros_like(x)
        out[:, 1:, :f] = x[:, :-1, :f]  # from the previous frame
        out[:, :-1, f:2 * f] = x[:, 1:, f:2 * f]  # from the next frame
        out[:, :, 2 * f:] = x[:, :, 2 * f:]
        return out + self.adapter(out)


class TemplateVideo(nn.Module):
    def __init__(self, clip, tok, names):
        super().__init__()
        self.text = IdsTextTower(clip).requires_grad_(False)
        self.register_buffer("class_tokens", template_tokens(tok, names))
        self.temporal = TemporalShift(embed_dim(clip))
        self.register_buffer("logit_scale", clip.logit_scale.detach().clone())

    def set_classes(self, tokens: torch.Tensor) -> None:
        self.class_tokens = tokens.to(self.class_tokens.device)

    def class_text(self) -> torch.Tensor:
        return F.normalize(self.text.encode(self.class_tokens), dim=-1)  # [n_cls, E]

    def encode_video(self, features, mask=None):
        x = self.temporal(F.normalize(features, dim=-1))  # [B, T, D]
        return F.normalize(masked_mean(x, mask), dim=-1)

    def forward(self, features, mask=None):
        return self.logit_scale.exp() * self.encode_video(features, mask) @ self.class_text().t()


class WeightsAtConstruction(TemplateVideo):
    """The class features computed once, when the model is built; a new class list changes the ids only."""

    def __init__(self, clip, tok, names):
        super().__init__(clip, tok, names)
        with torch.no_grad():
            self.register_buffer("zeroshot_weights", super().class_text())

    def class_text(self):
        return self.zeroshot_weights


def _target(cls, clip, tok, names):
    return make_target(
        seeded(cls, clip, tok, names), names, clip, tok, videos(clip, names),
        description=f"no learned context: {TEMPLATE!r} per class through CLIP; a temporal shift and a residual "
                    f"adapter over the frames",
        token_ids=lambda m: m.class_tokens, encode_text=lambda m, prompts, ids: m.text(prompts, ids),
        temporal_kind="shift",  # the module is model.temporal, the default
        for_classes=lambda m, classes: m.set_classes(template_tokens(tok, classes)) or m,
    )


def context_free(clip, tok, names):
    return _target(TemplateVideo, clip, tok, names)


def context_free_stale_weights(clip, tok, names):
    return _target(WeightsAtConstruction, clip, tok, names)
