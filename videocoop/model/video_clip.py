"""VideoFeatureCLIP: learned prompts scored against aggregated video features."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.loader import embed_dim
from ..utils.errors import VideoCoopError
from .prompt_learner import PromptLearner
from .shared_prefix import SharedLayout
from .text_encoder import TextEncoder

TEMPORAL_AGGS = ("mean", "max", "transformer")


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over T of ``[B, T, D]``, counting only frames where ``mask`` ``[B, T]`` is true."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class TemporalTransformer(nn.Module):
    """A small trainable temporal module over frame features, Efficient-Prompt style.

    Learned temporal position embedding, 1-2 transformer encoder layers, and a
    zero-initialised output projection added back to the frames (residual): at step 0 it
    is the identity, so the model starts exactly as ``temporal_agg="mean"``.
    """

    def __init__(self, dim: int, layers: int = 1, heads: int = 8, max_frames: int = 64):
        super().__init__()
        if dim % heads:
            heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.max_frames = max_frames
        self.pos_embedding = nn.Parameter(torch.empty(max_frames, dim).normal_(std=0.02))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        if T > self.max_frames:
            raise VideoCoopError(f"{T} frames exceed the temporal module's {self.max_frames}; sample fewer frames")
        h = x + self.pos_embedding[:T]  # [B, T, D]
        h = self.encoder(h, src_key_padding_mask=None if mask is None else ~mask)
        return x + self.out(h)  # [B, T, D]


class VideoFeatureCLIP(nn.Module):
    """CoOp prompts + frozen CLIP text tower + temporal aggregation of frame features.

    Args:
        classnames, clip_model, tokenizer, n_ctx, ctx_init, csc, class_token_position:
            see :class:`~videocoop.model.prompt_learner.PromptLearner`.
        temporal_agg: ``mean`` or ``max`` over valid frames, or ``transformer`` (a small
            trainable module, equal to ``mean`` at initialisation).
        text_pool: ``eot`` (CLIP's pooling) or ``mean`` (positions 0…EOT).
        **prompt_kwargs: passed to PromptLearner (``display_names``, ``split_camel_case``,
            ``truncate``).

    ``forward(features [B, T, D], mask [B, T] | None)`` returns
    ``logit_scale.exp() * cos(video, text)`` ``[B, n_cls]``. Trainable: ``ctx`` and the
    temporal module; every CLIP weight stays frozen.
    """

    def __init__(
        self,
        classnames: Sequence[str],
        clip_model: nn.Module,
        tokenizer,
        n_ctx: int = 16,
        ctx_init: str | Mapping[str, str] | None = None,
        csc: bool = False,
        class_token_position: str = "end",
        temporal_agg: str = "mean",
        text_pool: str = "eot",
        temporal_layers: int = 1,
        **prompt_kwargs,
    ):
        super().__init__()
        if temporal_agg not in TEMPORAL_AGGS:
            raise VideoCoopError(f"unknown temporal_agg {temporal_agg!r}; choose one of {', '.join(TEMPORAL_AGGS)}")
        self.prompt_learner = PromptLearner(
            classnames, clip_model, tokenizer, n_ctx=n_ctx, ctx_init=ctx_init, csc=csc,
            class_token_position=class_token_position, **prompt_kwargs,
        )
        self.text_encoder = TextEncoder(clip_model, pool=text_pool, eot_token_id=self.prompt_learner.eot_token_id)
        self.text_encoder.requires_grad_(False)  # CLIP stays frozen even if handed in trainable
        self.embed_dim = embed_dim(clip_model)
        self.temporal_agg = temporal_agg
        self.temporal = TemporalTransformer(self.embed_dim, layers=temporal_layers) if temporal_agg == "transformer" else None
        # A frozen copy: CLIP's own logit_scale is a parameter we never train.
        self.register_buffer("logit_scale", clip_model.logit_scale.detach().float().clone())

    @property
    def classnames(self) -> list[str]:
        return self.prompt_learner.classnames

    def encode_text(self, classes: slice | None = None) -> torch.Tensor:
        """L2-normalised class text features ``[n_cls, embed_dim]`` (fp32).

        Args:
            classes: encode only these classes (a contiguous range: one process's share
                when the classes are sharded over processes); None: all.
        """
        prompts = self.prompt_learner()  # [n_cls, L, width]: cheap, the text tower is the cost
        tokens = self.prompt_learner.tokenized_prompts  # [n_cls, L]
        layout = SharedLayout.of(self.prompt_learner)
        if classes is not None:
            prompts, tokens, layout = prompts[classes], tokens[classes], layout.select(classes)
        text = self.text_encoder(prompts, tokens, layout=layout)  # [n, E]
        return F.normalize(text, dim=-1)

    def encode_video(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised video features ``[B, embed_dim]`` from frame features ``[B, T, D]``.

        Frames are normalised first, so no single frame dominates by its norm.
        """
        if features.dim() != 3 or features.shape[-1] != self.embed_dim:
            raise VideoCoopError(
                f"features must be [B, T, {self.embed_dim}] for this CLIP, got {list(features.shape)}"
            )
        x = F.normalize(features.float(), dim=-1)  # [B, T, D]
        if mask is not None:
            mask = mask.bool()
        if self.temporal is not None:
            x = self.temporal(x, mask)
        if self.temporal_agg == "max":
            if mask is not None:
                x = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
            v = x.max(dim=1).values
        else:
            v = masked_mean(x, mask)
        return F.normalize(v, dim=-1)  # [B, E]

    def logits(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scaled cosine logits ``[B, n_cls]`` from normalised video and text features."""
        return self.logit_scale.exp() * video @ text.t()

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.encode_video(features, mask), self.encode_text())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The learned tensors only (context and temporal module), for checkpoints."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load what :meth:`trainable_state_dict` saved; ``strict`` demands exactly those keys."""
        params = dict(self.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if strict and set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise VideoCoopError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for k, v in state.items():
                if k not in params:
                    continue
                if params[k].shape != v.shape:
                    raise VideoCoopError(f"checkpoint tensor {k} has shape {list(v.shape)}, model has {list(params[k].shape)}")
                params[k].copy_(v)
