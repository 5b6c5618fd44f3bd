"""Deep text prompts in the ViFi-CLIP / MaPLe style (``ResidualAttentionBlock_IVLP``): CLIP's own
text blocks are replaced by blocks that overwrite the context positions with learned tokens of
their own before running, so the CLIP model the user hands over is itself modified and its
``encode_text`` is no longer clean CLIP's.

ViFi-CLIP's other recipe fine-tunes CLIP's text tower itself: those tensors train by design, which
the target declares (``trainable_clip``).

Planted, as ViFi-CLIP has them: ``tokenized_prompts`` a plain attribute of the learner, aliased on
the model; and a fine-tuning run whose optimiser is still built over the prompt learner only.
"""
from __future__ import annotations

import copy

import torch
from open_clip.transformer import ResidualAttentionBlock

from ..clean import seeded
from .common import N_CTX, CoOpVideo, videos
from .target import make_target


class PromptedBlock(ResidualAttentionBlock):
    """A CLIP text block with ``n_ctx`` learned tokens of its own at positions 1..n_ctx (IVLP's ``VPT_shallow``)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, n_ctx: int, deep: bool, act_layer, norm_layer):
        super().__init__(width, heads, mlp_ratio, act_layer=act_layer, norm_layer=norm_layer)
        self.n_ctx = n_ctx
        # the first block's context comes in with the prompts; deeper blocks bring their own
        self.deep_ctx = torch.nn.Parameter(torch.empty(n_ctx, width).normal_(std=0.02)) if deep else None

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        if self.deep_ctx is not None:
            ctx = self.deep_ctx.to(q_x.dtype).unsqueeze(0).expand(q_x.shape[0], -1, -1)  # [n, n_ctx, width]
            q_x = torch.cat([q_x[:, :1], ctx, q_x[:, 1 + self.n_ctx:]], dim=1)
        return super().forward(q_x, k_x, v_x, attn_mask)


def prompted_clip(clip, n_ctx: int = N_CTX):
    """A copy of ``clip`` whose text blocks carry deep prompts (ViFi's ``clip.build_model(..., design_details)``)."""
    prompted = copy.deepcopy(clip)
    blocks = prompted.transformer.resblocks
    for i, block in enumerate(blocks):  # new blocks with CLIP's weights loaded, as ViFi builds its model
        width = block.ln_1.weight.shape[0]
        new = PromptedBlock(width, block.attn.num_heads, block.mlp.c_fc.out_features / width, n_ctx, deep=i > 0,
                            act_layer=type(block.mlp.gelu), norm_layer=type(block.ln_1))
        new.load_state_dict(block.state_dict(), strict=False)
        blocks[i] = new.to(block.ln_1.weight.dtype)
    prompted.requires_grad_(False)
    for block in blocks:
        if block.deep_ctx is not None:
            block.deep_ctx.requires_grad_(True)
    return prompted


class DeepPromptVideo(CoOpVideo):
    def __init__(self, prompted, tok, names, **kwargs):
        super().__init__(prompted, tok, names, **kwargs)
        for block in self.text_encoder.transformer.resblocks:  # the deep prompts train with the context
            if block.deep_ctx is not None:
                block.deep_ctx.requires_grad_(True)


class PlainTokensVideo(DeepPromptVideo):
    """ViFi's ``self.tokenized_prompts = tokenized_prompts`` in the learner and its alias on the model."""

    def __init__(self, prompted, tok, names, **kwargs):
        super().__init__(prompted, tok, names, **kwargs)
        pl = self.prompt_learner
        pl.tokenized_prompts = pl._buffers.pop("tokenized_prompts")
        self.tokenized_prompts = pl.tokenized_prompts

    def encode_text(self):
        return torch.nn.functional.normalize(self.text_encoder(self.prompt_learner(), self.tokenized_prompts), dim=-1)


def _target(cls, clip, tok, names):
    prompted = seeded(prompted_clip, clip)
    model = seeded(cls, prompted, tok, names)
    return make_target(model, names, prompted, tok, videos(clip, names),
                       description="deep text prompts (ViFi-CLIP / MaPLe): learned tokens inside CLIP's own text blocks; "
                                   "the CLIP model handed over is the prompted one")


def deep_prompts(clip, tok, names):
    return _target(DeepPromptVideo, clip, tok, names)


def deep_prompts_plain_tokens(clip, tok, names):
    return _target(PlainTokensVideo, clip, tok, names)


def _finetune_target(clip, tok, names, make_optimizer):
    own = copy.deepcopy(clip)  # its text tower trains: a copy of its own, the CLIP handed in untouched
    model = seeded(CoOpVideo, own, tok, names)
    model.text_encoder.requires_grad_(True)
    return make_target(model, names, own, tok, videos(clip, names),
                       description="ViFi-CLIP fine-tuning: CLIP's text tower trains with the context",
                       trainable_clip=("text_encoder.*",), make_optimizer=make_optimizer)


def text_finetune(clip, tok, names):
    return _finetune_target(clip, tok, names, lambda m: torch.optim.AdamW(
        [p for p in m.parameters() if p.requires_grad], lr=1e-5))


def text_finetune_prompt_optimizer(clip, tok, names):
    """The prompt-learning trainer's optimiser kept for fine-tuning: the text tower never steps."""
    return _finetune_target(clip, tok, names, lambda m: torch.optim.AdamW(m.prompt_learner.parameters(), lr=1e-5))
