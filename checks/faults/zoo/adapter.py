"""CLIP-Adapter (``gaopengcuhk/CLIP-Adapter``, ``clip_adapter.py``) on videos: no learned prompt at
all; CLIP's features of a hand-written template per class, computed by CLIP in the forward; a small
residual adapter on the video feature (``0.2 * adapter(v) + 0.8 * v``) is all that trains.

Planted, as upstream has it: the template tokenized inside the forward and sent to a device fixed
when the model was built (upstream: ``prompts.to('cuda')``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import masked_mean, videos
from .target import make_target

TEMPLATE = "a photo of a person doing {}."
RATIO = 0.2


class Adapter(nn.Sequential):
    def __init__(self, dim: int, reduction: int = 4):
        super().__init__(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(dim // reduction, dim, bias=False), nn.ReLU(inplace=True))


class TemplateText(nn.Module):
    """Upstream's TextEncoder: CLIP's ``encode_text`` of the template, every forward."""

    def __init__(self, clip, tok, names):
        super().__init__()
        self.clip_model = clip
        self.register_buffer("tokens", tok([TEMPLATE.format(n.replace("_", " ")) for n in names]))  # [n_cls, 77]

    def forward(self) -> torch.Tensor:
        return self.clip_model.encode_text(self.tokens)  # [n_cls, E]


class AdapterVideo(nn.Module):
    def __init__(self, clip, tok, names):
        super().__init__()
        self.text_encoder = TemplateText(clip, tok, names)
        self.adapter = Adapter(embed_dim(clip))
        self.logit_scale = clip.logit_scale

    def forward(self, features, mask=None):
        video = masked_mean(F.normalize(features, dim=-1), mask)  # [B, D]
        video = RATIO * self.adapter(video) + (1 - RATIO) * video
        text = F.normalize(self.text_encoder(), dim=-1)
        return self.logit_scale.exp() * F.normalize(video, dim=-1) @ text.t()  # [B, n_cls]


class HostTokensText(TemplateText):
    """Tokenizes in the forward and moves the ids to the device the model was built on."""

    def __init__(self, clip, tok, names):
        super().__init__(clip, tok, names)
        self.texts, self.tok = [TEMPLATE.format(n.replace("_", " ")) for n in names], tok
        self.device = clip.logit_scale.device  # where CLIP was when the model was built

    def forward(self):
        return self.clip_model.encode_text(self.tok(self.texts).to(self.device))


def _target(model, clip, tok, names):
    model.requires_grad_(False)
    model.adapter.requires_grad_(True)  # upstream: only 'adapter' trains
    return make_target(model, names, clip, tok, videos(clip, names),
                       description="CLIP-Adapter: hand-written template text, a residual adapter on the video feature")


def adapter(clip, tok, names):
    return _target(seeded(AdapterVideo, clip, tok, names), clip, tok, names)


def adapter_host_tokens(clip, tok, names):
    model = seeded(AdapterVideo, clip, tok, names)
    model.text_encoder = HostTokensText(clip, tok, names)
    return _target(model, clip, tok, names)
