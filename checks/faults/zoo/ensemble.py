"""A template ensemble in the ActionCLIP style (``sallymmx/ActionCLIP``, ``test.py`` and
``modules/visual_prompt.py``): no learned prompt; every class is written into 16 hand-written
templates, CLIP encodes all of them, each template scores the video on its own and the scores are
softmaxed per template and averaged, so the model outputs probabilities. A depthwise convolution of
width 3 over a fixed number of frames (ActionCLIP's ``Conv_1D`` fusion, initialised as a temporal
shift) is what trains.

Planted, as upstream has it: the frames turned into the convolution's layout with
``x.view(-1, c, t)`` on ``[b, t, c]`` instead of a transpose, which reinterprets memory, so the
"temporal" convolution mixes channels and frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import IdsTextTower, videos
from .target import make_target

#: Sixteen hand-written templates (ActionCLIP's ensemble is 16; these are our own words).
TEMPLATES = (
    "a video of {}.", "a clip of {}.", "a person doing {}.", "someone is {}.", "the action of {}.",
    "a recording of {}.", "footage of {}.", "{}, an action.", "{}.", "a video showing {}.",
    "a short clip of a person {}.", "an example of {}.", "a human performing {}.", "look, someone is {}.",
    "a man doing {}.", "a woman doing {}.",
)
#: The frames the fusion takes (ActionCLIP samples a fixed number of segments).
FRAMES = 8


def template_ids(tok, names, templates=TEMPLATES) -> torch.Tensor:
    """Every class in every template, tokenized: ``[K, n_cls, 77]`` (template k of class c at ``[k, c]``)."""
    return torch.stack([tok([t.format(n.replace("_", " ")) for n in names]) for t in templates])


class ShiftConv1d(nn.Module):
    """A depthwise convolution of width 3 over the frames, initialised as a temporal shift: a quarter of
    the channels read the previous frame, a quarter the next, the rest their own; added to the frames."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1, groups=dim, bias=False)
        weight = torch.zeros(dim, 1, 3)
        weight[: dim // 4, 0, 0] = 1.0
        weight[dim // 4: dim - dim // 4, 0, 1] = 1.0
        weight[dim - dim // 4:, 0, 2] = 1.0
        with torch.no_grad():
            self.conv.weight.copy_(weight)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T, D]``: each frame plus the convolution over its neighbours."""
        y = self.conv(x.transpose(1, 2))  # [B, D, T]: the channels as channels, the frames as the length
        return x + y.transpose(1, 2)


class ViewConv1d(ShiftConv1d):
    """Upstream's ``x.view(-1, c, t)``: the ``[b, t, c]`` memory read as ``[b, c, t]``, not transposed."""

    def frames(self, x):
        b, t, c = x.shape
        y = self.conv(x.contiguous().view(-1, c, t))  # [b, c, t] holding frames and channels interleaved
        return x + y.permute(0, 2, 1)


class EnsembleVideo(nn.Module):
    def __init__(self, clip, tok, names, fusion=ShiftConv1d, frames: int = FRAMES):
        super().__init__()
        self.text = IdsTextTower(clip).requires_grad_(False)
        self.register_buffer("template_ids", template_ids(tok, names))  # [K, n_cls, 77]
        self.fusion = fusion(embed_dim(clip))
        self.num_frames = frames
        self.register_buffer("logit_scale", clip.logit_scale.detach().clone())  # CLIP's, frozen

    def set_classes(self, ids: torch.Tensor) -> None:
        self.template_ids = ids.to(self.template_ids.device)

    def class_text(self) -> torch.Tensor:
        """Every template's class features ``[K, n_cls, E]``, normalised."""
        K, n, L = self.template_ids.shape
        return F.normalize(self.text.encode(self.template_ids.reshape(K * n, L)), dim=-1).view(K, n, -1)

    def encode_video(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.num_frames:  # upstream: x.view(b, self.T, c)
            raise ValueError(f"the fusion takes {self.num_frames} frames, got {features.shape[1]}")
        x = self.fusion.frames(F.normalize(features, dim=-1))  # [B, T, D]
        return F.normalize(x.mean(dim=1), dim=-1)  # [B, D]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        video = self.encode_video(features)
        logits = self.logit_scale.exp() * torch.einsum("be,kne->bkn", video, self.class_text())  # [B, K, n_cls]
        return logits.softmax(dim=-1).mean(dim=1)  # [B, n_cls]: each template's probabilities, averaged


def _target(fusion, clip, tok, names):
    model = seeded(EnsembleVideo, clip, tok, names, fusion=fusion)
    return make_target(
        model, names, clip, tok, videos(clip, names, frames=FRAMES),
        description=f"a template ensemble (ActionCLIP): {len(TEMPLATES)} hand-written templates per class, "
                    f"probabilities averaged over them; a width-3 convolution over {FRAMES} frames",
        prompts_per_class=len(TEMPLATES), combine="probabilities", output="probabilities",
        token_ids=lambda m: m.template_ids,  # [K, n_cls, L]: no learned context, the ids are the prompts
        encode_text=lambda m, prompts, ids: m.text(prompts, ids),
        encode_video=lambda m, x, mask: m.encode_video(x),
        temporal=lambda m, x: m.fusion.frames(x), temporal_kind="conv:3", frames=FRAMES,
        for_classes=lambda m, classes: m.set_classes(template_ids(tok, classes)) or m,
    )


def template_ensemble(clip, tok, names):
    return _target(ShiftConv1d, clip, tok, names)


def template_ensemble_view(clip, tok, names):
    return _target(ViewConv1d, clip, tok, names)
