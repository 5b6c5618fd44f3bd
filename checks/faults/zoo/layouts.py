"""A plain CoOp port around what the CoOp layout does not fix: a dataset whose labels are numpy
``int64`` and whose ``meta`` is the video's path (a string), a prompt learner keeping its frozen
embeddings under other names than ``token_prefix``/``token_suffix``, and a model already on the
accelerator (the foreign device: CUDA when present, the meta device here) when it is handed over.

Planted: labels counted from 1, the learner's embeddings a plain attribute, and a mask made on
the host in a forward that runs on the accelerator.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from videocoop.clip import text_tower

from ...core import foreign_device
from ..clean import seeded
from .common import N_CTX, CoOpVideo, coop_prompts, videos
from .target import make_target


def numpy_labels(clip, tok, names, offset: int = 0):
    data = videos(clip, names, label=np.int64, meta=str, offset=offset)
    return make_target(seeded(CoOpVideo, clip, tok, names), names, clip, tok, data,
                       description="CoOp port; dataset items (features, numpy int64 label, path string)")


def numpy_labels_from_one(clip, tok, names):
    return numpy_labels(clip, tok, names, offset=1)


class WholeEmbeddingPrompts(nn.Module):
    """The whole prompts' token embeddings in one buffer, the context written over its slots."""

    def __init__(self, clip, tok, names, n_ctx: int = N_CTX):
        super().__init__()
        embedding = text_tower(clip).token_embedding
        _, tokens = coop_prompts(tok, names, n_ctx)
        with torch.no_grad():
            self.keep(embedding(tokens))  # [n_cls, 77, width]
        slots = torch.zeros(tokens.shape, dtype=torch.bool)
        slots[:, 1:1 + n_ctx] = True
        self.register_buffer("ctx_slots", slots)
        self.register_buffer("tokenized_prompts", tokens)
        self.ctx = nn.Parameter(torch.empty(n_ctx, embedding.weight.shape[1]).normal_(std=0.02))

    def keep(self, embeddings):
        self.register_buffer("embeddings", embeddings)

    def forward(self):
        ctx = torch.zeros_like(self.embeddings)
        ctx[:, 1:1 + self.ctx.shape[0]] = self.ctx  # [n_cls, 77, width]
        return torch.where(self.ctx_slots.unsqueeze(-1), ctx, self.embeddings)


class PlainEmbeddingPrompts(WholeEmbeddingPrompts):
    def keep(self, embeddings):
        self.embeddings = embeddings  # not a buffer: .to() leaves it behind


def _buffers_target(prompts_cls, clip, tok, names):
    model = seeded(CoOpVideo, clip, tok, names)
    model.prompt_learner = seeded(prompts_cls, clip, tok, names)
    return make_target(model, names, clip, tok, videos(clip, names),
                       description="CoOp port; one buffer of token embeddings (no token_prefix/token_suffix)")


def other_buffer_names(clip, tok, names):
    return _buffers_target(WholeEmbeddingPrompts, clip, tok, names)


def other_buffer_names_plain(clip, tok, names):
    return _buffers_target(PlainEmbeddingPrompts, clip, tok, names)


class HostMaskVideo(CoOpVideo):
    """Fills in an all-true mask when none is given, made on the host: right on the CPU only."""

    def forward(self, features, mask=None):
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool)  # [B, T] on the CPU
        return super().forward(features, mask)


def on_accelerator(clip, tok, names, cls=CoOpVideo):
    """The port as a training script hands it over: already moved to the accelerator, with CLIP's text
    modules of its own (a port that loads CLIP itself, as Efficient-Prompt's does); ``rebuild`` makes
    it again on the CPU."""
    def build():
        return seeded(cls, copy.deepcopy(clip), tok, names)

    target = make_target(build().to(foreign_device()), names, clip, tok, videos(clip, names),
                         description=f"CoOp port already on the accelerator ({foreign_device().type})")
    target.rebuild = build
    return target


def on_accelerator_host_mask(clip, tok, names):
    return on_accelerator(clip, tok, names, HostMaskVideo)
