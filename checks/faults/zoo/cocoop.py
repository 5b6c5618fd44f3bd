"""CoCoOp (CoOp's ``trainers/cocoop.py``) on videos: a meta-net turns each video's feature into a
shift of the context, so the prompts are ``[B, n_cls, L, width]`` and the text path runs once per
video; in training mode the forward takes the labels and returns the loss.

Planted, as CoCoOp ports have them: the shift taken from the batch's mean video (the videos of a
batch mix through the text path), CoCoOp's own alias ``self.tokenized_prompts`` on the outer model
(a plain attribute ``.to()`` leaves behind), and CoOp's permute kept without the mask.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim

from ..clean import seeded
from .common import CoOpVideo, PermuteTextEncoder, PortPromptLearner, videos
from .target import make_target


class MetaNet(nn.Sequential):
    """CoCoOp's meta-net: the video feature ``[B, E]`` -> a context shift ``[B, width]``."""

    def __init__(self, dim: int, width: int):
        hidden = max(dim // 16, 2)
        super().__init__(OrderedDict([("linear1", nn.Linear(dim, hidden)), ("relu", nn.ReLU(inplace=True)),
                                      ("linear2", nn.Linear(hidden, width))]))


class ConditionalPromptLearner(PortPromptLearner):
    def __init__(self, clip, tok, names, **kwargs):
        super().__init__(clip, tok, names, **kwargs)
        self.meta_net = MetaNet(embed_dim(clip), self.ctx.shape[-1])

    def forward(self, video_features: torch.Tensor) -> torch.Tensor:
        bias = self.meta_net(video_features).unsqueeze(1)  # [B, 1, width]
        ctx = self.ctx.unsqueeze(0) + bias  # [B, n_ctx, width]: the context shifted per video
        return torch.stack([self.construct(c.unsqueeze(0).expand(self.n_cls, -1, -1)) for c in ctx])  # [B, n_cls, L, w]


class CoCoOpVideo(CoOpVideo):
    """CoCoOp's CustomCLIP: the text features of each video's own prompts; the loss in training mode."""

    def __init__(self, clip, tok, names, **kwargs):
        super().__init__(clip, tok, names, **kwargs)
        self.prompt_learner = ConditionalPromptLearner(clip, tok, names, **kwargs)

    def tokens(self) -> torch.Tensor:
        return self.prompt_learner.tokenized_prompts

    def condition(self, video: torch.Tensor) -> torch.Tensor:
        """What the meta-net sees: each video's own feature ``[B, E]``."""
        return video

    def forward(self, features, label=None, mask=None):
        video = self.encode_video(features, mask)  # [B, E]
        prompts = self.prompt_learner(self.condition(video))  # [B, n_cls, L, width]
        logits = []
        for prompts_i, video_i in zip(prompts, video):
            text = F.normalize(self.text_encoder(prompts_i, self.tokens()), dim=-1)  # [n_cls, E]
            logits.append(self.logit_scale.exp() * video_i @ text.t())
        logits = torch.stack(logits)  # [B, n_cls]
        if self.prompt_learner.training:
            return F.cross_entropy(logits, label)
        return logits


class BatchMeanCondition(CoCoOpVideo):
    """The shift computed once from the batch's mean video: every video's prompts depend on its batch-mates."""

    def condition(self, video):
        return video.mean(dim=0, keepdim=True).expand_as(video)  # [B, E], the same row for every video


class AliasedTokens(CoCoOpVideo):
    """CoCoOp's ``self.tokenized_prompts = self.prompt_learner.tokenized_prompts``: after ``.to()`` the
    learner's buffer is a new tensor on the device and this alias still the old one on the CPU."""

    def __init__(self, clip, tok, names, **kwargs):
        super().__init__(clip, tok, names, **kwargs)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts

    def tokens(self):
        return self.tokenized_prompts


def load_learner(model, state) -> None:
    """CoCoOp's ``load_model``: the saved prompt learner without its token buffers, ``strict=False``."""
    state = {k: v for k, v in state.items() if k not in ("token_prefix", "token_suffix")}
    model.prompt_learner.load_state_dict(state, strict=False)


def _target(cls, clip, tok, names, encoder=None):
    model = seeded(cls, clip, tok, names)
    if encoder is not None:
        model.text_encoder = encoder(clip).requires_grad_(False)
    return make_target(
        model, names, clip, tok, videos(clip, names),
        description="CoCoOp: a meta-net shifts the context per video; prompts [B, n_cls, L, width]",
        logits=lambda m, x, mask: m(x, mask=mask),
        loss=lambda m, x, y, mask: m(x, y, mask=mask),  # the training forward returns the loss
        prompts=lambda m, v: m.prompt_learner(m.condition(m.encode_video(v))),  # [B, n_cls, L, width]
        save_state=lambda m: m.prompt_learner.state_dict(),  # what CoCoOp's trainer saves, buffers included
        load_state=load_learner,
    )


def cocoop(clip, tok, names):
    return _target(CoCoOpVideo, clip, tok, names)


def cocoop_batch_mean(clip, tok, names):
    return _target(BatchMeanCondition, clip, tok, names)


def cocoop_aliased_tokens(clip, tok, names):
    return _target(AliasedTokens, clip, tok, names)


def cocoop_permute_kept(clip, tok, names):
    return _target(CoCoOpVideo, clip, tok, names, encoder=PermuteTextEncoder)


def cocoop_ddp_checkpoint(clip, tok, names):
    """Resumed from a checkpoint its DDP-wrapped trainer saved ('module.' before every key): CoCoOp's loader
    (strict=False) loads none of it and says nothing."""
    target = cocoop(clip, tok, names)
    state = target.model.prompt_learner.state_dict()
    target.checkpoint = {"state_dict": {f"module.{k}": v.clone() for k, v in state.items()}, "epoch": 5}
    return target
