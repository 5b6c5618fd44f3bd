"""What the foreign ports share: CoOp's prompt learner and text encoder as a user ports them to
open_clip (batch-first, the causal mask passed, EOT at the argmax of the ids), a masked mean over
frames, and in-memory video datasets whose items look as each family's loader gives them.

Written from the structure of the published code (CoOp's ``trainers/coop.py``), in our own words;
none of it imports videocoop's model, so the audits meet code they were not tuned on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from videocoop.clip import TINY_MODEL, embed_dim, text_tower

#: Context tokens of the ports (CoOp's default is 16; 4 keeps the tiny model fast).
N_CTX = 4


class PortTextEncoder(nn.Module):
    """CoOp's TextEncoder on open_clip 3.x: CLIP's own modules, batch-first, no permute, the causal
    mask sliced to the prompt length, the EOT at ``tokenized_prompts.argmax(-1)``."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        text = text_tower(clip)
        self.transformer = text.transformer
        self.positional_embedding = text.positional_embedding
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        L = prompts.shape[1]
        x = prompts + self.positional_embedding[:L]  # [n_cls, L, width]
        x = self.transformer(x, attn_mask=self.attn_mask[:L, :L])
        x = self.ln_final(x)
        eot = tokenized_prompts.argmax(dim=-1)  # [n_cls]: CLIP's EOT is its largest id
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # [n_cls, width]
        return x @ self.text_projection  # [n_cls, E]


class IdsTextTower(PortTextEncoder):
    """CLIP's text path as the families without learned context call it: ``encode(ids)`` is
    ``encode_text`` (token embedding, then the encoder); ``forward(prompts, ids)`` the same path from
    prompt embeddings (what the contract's ``encode_text`` declares)."""

    def __init__(self, clip: nn.Module):
        super().__init__(clip)
        self.token_embedding = text_tower(clip).token_embedding

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self(self.token_embedding(ids), ids)  # [n, E]


class PermuteTextEncoder(PortTextEncoder):
    """CoOp's own encoder kept as written: ``permute(1, 0, 2)`` around a batch-first transformer,
    and the mask dropped to silence the shape error that follows (open_clip #910)."""

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding[: prompts.shape[1]]
        x = x.permute(1, 0, 2)  # NLD -> LND: open_clip reads L as the batch, the classes as the sequence
        x = self.transformer(x)
        x = self.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(x.shape[0], device=x.device), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


def coop_prompts(tok, names, n_ctx: int = N_CTX) -> tuple[list[str], torch.Tensor]:
    """CoOp's prompt texts ``"X X X X name."`` and their ids ``[n_cls, 77]`` (the full context, as CoOp tokenizes)."""
    texts = [" ".join(["X"] * n_ctx) + " " + name.replace("_", " ") + "." for name in names]
    return texts, tok(texts)


class PortPromptLearner(nn.Module):
    """CoOp's PromptLearner: a shared context between SOS and the class name, the frozen token
    embeddings around it kept as buffers (``token_prefix``, ``token_suffix``, ``tokenized_prompts``)."""

    def __init__(self, clip: nn.Module, tok, names, n_ctx: int = N_CTX):
        super().__init__()
        embedding = text_tower(clip).token_embedding
        width = embedding.weight.shape[1]
        self.ctx = nn.Parameter(torch.empty(n_ctx, width).normal_(std=0.02))  # [n_ctx, width]
        _, tokens = coop_prompts(tok, names, n_ctx)
        with torch.no_grad():
            emb = embedding(tokens)  # [n_cls, 77, width]
        self.register_buffer("token_prefix", emb[:, :1].clone())  # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:].clone())  # class, ".", EOT, padding
        self.register_buffer("tokenized_prompts", tokens)
        self.n_cls, self.n_ctx = len(names), n_ctx

    def construct(self, ctx: torch.Tensor) -> torch.Tensor:
        """Prompts ``[n_cls, L, width]`` around the context ``[n_cls, n_ctx, width]``."""
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def forward(self) -> torch.Tensor:
        return self.construct(self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1))  # [n_cls, L, width]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real frames of ``[B, T, D]`` (``mask`` ``[B, T]``; None: all)."""
    # the same as videocoop.model.video_clip.masked_mean, written again on purpose: the zoo imports no
    # videocoop model code (the module docstring), so the audits meet a pooling they were not tuned on
    if mask is None:
        return x.mean(dim=1)
    m = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class CoOpVideo(nn.Module):
    """A plain CoOp port on frame features: the learned prompts, CLIP's text path, the mean of the
    normalised frames, cosine logits at CLIP's temperature. The base most families change."""

    def __init__(self, clip: nn.Module, tok, names, n_ctx: int = N_CTX):
        super().__init__()
        self.prompt_learner = PortPromptLearner(clip, tok, names, n_ctx)
        self.text_encoder = PortTextEncoder(clip).requires_grad_(False)
        self.logit_scale = clip.logit_scale  # CLIP's own parameter, frozen with the rest of CLIP

    def encode_text(self) -> torch.Tensor:
        pl = self.prompt_learner
        return F.normalize(self.text_encoder(pl(), pl.tokenized_prompts), dim=-1)  # [n_cls, E]

    def encode_video(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(masked_mean(F.normalize(features, dim=-1), mask), dim=-1)  # [B, E]

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logit_scale.exp() * self.encode_video(features, mask) @ self.encode_text().t()  # [B, n_cls]


class Videos(Dataset):
    """In-memory frame features, two videos per class, each item ``(features [T, D], label, meta)``
    as a family's own loader gives it: ``label`` and ``meta`` made by the callables given."""

    def __init__(self, names, dim: int, frames: int = 4, label=int, meta=None, offset: int = 0, per_class: int = 2,
                 info: dict | None = None):
        g = torch.Generator().manual_seed(7)
        self.items = [(torch.randn(frames, dim, generator=g), c + offset, f"{names[c]}/v{v}")
                      for c in range(len(names)) for v in range(per_class)]
        self.label, self.meta, self.info, self.classnames = label, meta, info, list(names)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        features, label, path = self.items[i]
        meta = {"path": path} if self.meta is None else self.meta(path)
        return features, self.label(label), meta


def info(clip: nn.Module, frames: int) -> dict:
    """A ``features.json`` as the features would carry it: the tiny CLIP, its random weights, the width."""
    return {"clip_model": TINY_MODEL, "weights": "random:0", "num_frames": frames, "dim": embed_dim(clip)}


def videos(clip: nn.Module, names, frames: int = 4, **kwargs) -> Videos:
    return Videos(names, embed_dim(clip), frames, info=info(clip, frames), **kwargs)
