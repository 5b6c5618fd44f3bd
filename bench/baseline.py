"""The seed report's implementation, written faithfully for open_clip 3.x: the baseline.

What the seed report shows (``trainers/video_feature_coop.py``), kept as it was:

- CoOp's layout ``[SOS][X … X][CLASS][.][EOT][PAD…]`` over all 77 positions;
- ``tokenized_prompts`` moved to the token embedding's device, embedded, then registered
  as a buffer beside ``token_prefix`` and ``token_suffix`` (the report's fixes 1 and 2);
- the EOT index from ``tokenized_prompts.argmax(-1)`` (fix 3);
- mean pooling over positions 0…EOT in a Python loop over classes with ``.item()``
  (fix 5), or CoOp's EOT gather;
- fp32, one text forward per step.

Only what open_clip 3.x forces differs from CoOp: the transformer is batch-first (no
``permute``) and the causal mask lives on the CLIP model, so it is passed in (kept as a
non-persistent buffer so it follows ``.to(device)``). This is what ``python -m bench``
times our model against; it must give the same normalised text features as
``VideoFeatureCLIP(text_pool="mean")`` with the same context.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim, text_tower
from videocoop.model import masked_mean


class SeedPromptLearner(nn.Module):
    """CoOp's PromptLearner, unified context, class token at the end.

    ``ctx_init`` sets ``n_ctx`` to the phrase's *word* count, as CoOp does.
    """

    def __init__(self, classnames, clip_model, tokenizer, n_ctx: int = 16, ctx_init: str | None = None):
        super().__init__()
        text = text_tower(clip_model)
        token_embedding = text.token_embedding
        dtype = text.transformer.get_cast_dtype()
        ctx_dim = text.ln_final.weight.shape[0]
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = len(ctx_init.split(" "))
            prompt = tokenizer([ctx_init])
            with torch.no_grad():
                embedding = token_embedding(prompt.to(token_embedding.weight.device)).type(dtype)
            ctx_vectors = embedding[0, 1:1 + n_ctx, :].clone()
            prompt_prefix = ctx_init
        else:
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx_vectors)  # [n_ctx, width]

        classnames = [name.replace("_", " ") for name in classnames]
        prompts = [prompt_prefix + " " + name + "." for name in classnames]
        tokenized_prompts = tokenizer(prompts)  # [n_cls, 77]
        with torch.no_grad():
            # Fix 1: the ids go where the embedding table is.
            tokenized_prompts = tokenized_prompts.to(token_embedding.weight.device)
            embedding = token_embedding(tokenized_prompts).type(dtype)  # [n_cls, 77, width]
        # Fix 2: buffers follow model.to(device).
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # CLS, ".", EOT, PAD
        self.register_buffer("tokenized_prompts", tokenized_prompts)

        self.classnames = list(classnames)
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.class_token_position = "end"

    def forward(self) -> torch.Tensor:
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)  # [n_cls, 77, width]


class SeedTextEncoder(nn.Module):
    """CoOp's TextEncoder on open_clip 3.x, with the seed report's mean pooling loop."""

    def __init__(self, clip_model, pool: str = "mean"):
        super().__init__()
        text = text_tower(clip_model)
        self.transformer = text.transformer
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        self.dtype = text.transformer.get_cast_dtype()
        self.pool = pool

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.type(self.dtype)  # [n_cls, 77, width]
        x = self.transformer(x, attn_mask=self.attn_mask)  # open_clip 3.x: batch-first, no permute
        x = self.ln_final(x).type(self.dtype)
        eot_indices = tokenized_prompts.argmax(dim=-1)  # fix 3: a buffer, so the same device
        if self.pool == "mean":
            # Fix 5, as the report wrote it: one class at a time, the EOT read back to the host.
            pooled_features = []
            for i in range(x.shape[0]):
                eot_pos = eot_indices[i].item()
                pooled_features.append(x[i, :eot_pos + 1, :].mean(dim=0))
            x = torch.stack(pooled_features, dim=0)  # [n_cls, width]
        else:
            x = x[torch.arange(x.shape[0]), eot_indices]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection  # [n_cls, embed_dim]


class SeedFaithfulCLIP(nn.Module):
    """The seed report's VideoFeatureCLIP: CoOp prompts, the looped text encoder, mean over frames.

    Same public surface as :class:`videocoop.model.VideoFeatureCLIP` (``prompt_learner``,
    ``text_encoder``, ``encode_text``, ``encode_video``, ``logits``, ``forward(features,
    mask=None)``), so the audits and the benchmark can run either.

    Args:
        classnames: class names in label order.
        clip_model: a frozen open_clip model.
        tokenizer: its tokenizer (context length 77).
        n_ctx: context vectors (CoOp's default 16).
        ctx_init: an initial phrase; ``n_ctx`` becomes its word count (CoOp).
        text_pool: ``mean`` (the seed report's fix) or ``eot``.
        temporal_agg: ``mean`` only, as in the seed's command.
    """

    def __init__(self, classnames, clip_model, tokenizer, n_ctx: int = 16, ctx_init: str | None = None,
                 text_pool: str = "mean", temporal_agg: str = "mean"):
        super().__init__()
        if temporal_agg != "mean":
            raise ValueError(f"the seed baseline has temporal_agg 'mean' only, got {temporal_agg!r}")
        self.prompt_learner = SeedPromptLearner(classnames, clip_model, tokenizer, n_ctx=n_ctx, ctx_init=ctx_init)
        self.text_encoder = SeedTextEncoder(clip_model, pool=text_pool)
        self.text_encoder.requires_grad_(False)  # CoOp's trainer freezes all but the prompt learner
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().float().clone())
        self.embed_dim = embed_dim(clip_model)
        self.temporal = None
        self.temporal_agg = temporal_agg

    @property
    def classnames(self) -> list[str]:
        return self.prompt_learner.classnames

    def encode_text(self) -> torch.Tensor:
        prompts = self.prompt_learner()
        text = self.text_encoder(prompts, self.prompt_learner.tokenized_prompts)
        return F.normalize(text.float(), dim=-1)  # [n_cls, E]

    def encode_video(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = F.normalize(features.float(), dim=-1)  # [B, T, D]
        return F.normalize(masked_mean(x, None if mask is None else mask.bool()), dim=-1)  # [B, E]

    def logits(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * video @ text.t()

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.encode_video(features, mask), self.encode_text())  # [B, n_cls]
