"""Video prompts in the Efficient-Prompt style (``ju-chen/Efficient-Prompt``, ``src/model.py``): learned
embeddings fill every position but SOS, the class name and EOT, so there are learned tokens before
*and* after the class name; the token ids are kept as floats (``prompt_actiontoken``, upstream's
name); a temporal transformer (sequence-first) runs over a fixed number of frames.

Planted, as the upstream code has them: the device read once at construction
(``torch.arange(77).to(self.device)``), and the ids rebuilt in the forward with their ``.to()``
discarded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videocoop.clip import embed_dim, text_tower

from ..clean import seeded
from .common import PortTextEncoder, videos
from .target import make_target

#: Learned tokens before and after the class name, and the frames the temporal module takes.
PREFIX, POSTFIX, FRAMES = 4, 4, 16


class PrefixPostfixPrompts(nn.Module):
    def __init__(self, clip, tok, names, prefix: int = PREFIX, postfix: int = POSTFIX):
        super().__init__()
        text = text_tower(clip)
        length, width = text.positional_embedding.shape
        self.embedding = nn.Embedding(length, width)  # one learned vector per position
        nn.init.normal_(self.embedding.weight, std=0.01)
        tokens = tok([n.replace("_", " ") for n in names])  # [n_cls, 77]: SOS, name, EOT, zeros
        with torch.no_grad():
            name_embedding = text.token_embedding(tokens)  # [n_cls, 77, width]
        layout = torch.zeros(len(names), length, width)
        ids = torch.zeros(len(names), length)  # float, as upstream keeps them
        learned = torch.ones(len(names), length, dtype=torch.bool)
        for i in range(len(names)):
            eot = int(tokens[i].argmax())
            src = [0, *range(1, eot), eot]  # SOS, the name's tokens, EOT
            dst = [0, *range(prefix + 1, prefix + eot), prefix + eot + postfix]
            layout[i, dst], ids[i, dst], learned[i, dst] = name_embedding[i, src], tokens[i, src].float(), False
        self.register_buffer("class_embedding", layout)
        self.register_buffer("learned", learned)
        self.register_buffer("prompt_actiontoken", ids)
        self.length = length

    def positions(self) -> torch.Tensor:
        return torch.arange(self.length, device=self.embedding.weight.device)

    def forward(self) -> torch.Tensor:
        learned = self.embedding(self.positions())  # [77, width]
        return torch.where(self.learned.unsqueeze(-1), learned.unsqueeze(0), self.class_embedding)  # [n_cls, 77, w]


class GatherTextEncoder(PortTextEncoder):
    """CLIP's text path pooling the EOT with ``gather`` (the ids may be floats)."""

    def forward(self, prompts, tokenized_prompts):
        L = prompts.shape[1]
        x = self.ln_final(self.transformer(prompts + self.positional_embedding[:L], attn_mask=self.attn_mask[:L, :L]))
        eot = tokenized_prompts.argmax(dim=-1)  # [n_cls]
        x = x.gather(1, eot.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)  # [n_cls, width]
        return x @ self.text_projection


class PrefixPostfixVideo(nn.Module):
    def __init__(self, clip, tok, names, frames: int = FRAMES):
        super().__init__()
        dim = embed_dim(clip)
        self.prompt_learner = PrefixPostfixPrompts(clip, tok, names)
        self.text_encoder = GatherTextEncoder(clip).requires_grad_(False)
        self.num_frames = frames
        self.temporal_embedding = nn.Embedding(frames, dim)
        nn.init.normal_(self.temporal_embedding.weight, std=0.01)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0)  # sequence-first, as upstream's blocks
        self.temporal = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.logit_scale = clip.logit_scale

    def tokens(self) -> torch.Tensor:
        return self.prompt_learner.prompt_actiontoken

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        """The temporal transformer over the frames, ``[B, T, D]`` -> ``[B, T, D]`` (sequence-first inside)."""
        if features.shape[1] != self.num_frames:  # upstream: einops.rearrange(..., t=self.numF)
            raise ValueError(f"the temporal module takes {self.num_frames} frames, got {features.shape[1]}")
        x = features.float().permute(1, 0, 2)  # [T, B, D]
        x = x + self.temporal_embedding(torch.arange(self.num_frames, device=x.device)).unsqueeze(1)
        return self.temporal(x).permute(1, 0, 2)

    def encode_video(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.frames(features).mean(dim=1), dim=-1)  # [B, D]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        text = F.normalize(self.text_encoder(self.prompt_learner(), self.tokens()), dim=-1)  # [n_cls, E]
        return self.logit_scale.exp() * self.encode_video(features) @ text.t()


class FrozenDevicePrompts(PrefixPostfixPrompts):
    """Upstream's ``self.device`` read at construction and used in every forward."""

    def __init__(self, clip, tok, names, **kwargs):
        super().__init__(clip, tok, names, **kwargs)
        self.device = self.embedding.weight.device  # the CPU, where the model was built

    def positions(self):
        return torch.arange(self.length).to(self.device)


class DiscardedToVideo(PrefixPostfixVideo):
    """Upstream's ``replace_text_embedding``: the ids rebuilt each forward on the CPU and
    ``self.prompt_actiontoken.to(self.device)`` written without keeping its result."""

    def tokens(self):
        pl = self.prompt_learner
        rows = pl._buffers.pop("prompt_actiontoken", None)
        if rows is not None:
            self.rows = rows.tolist()  # kept on the host at construction, as upstream's actiontoken dict
        pl.prompt_actiontoken = torch.tensor(self.rows)  # [n_cls, 77] on the CPU
        pl.prompt_actiontoken.to(pl.embedding.weight.device)  # the copy is made and dropped
        return pl.prompt_actiontoken


def _target(model, clip, tok, names):
    return make_target(model, names, clip, tok, videos(clip, names, frames=FRAMES),
                       description=f"prefix/postfix video prompts (Efficient-Prompt): {PREFIX} + {POSTFIX} learned "
                                   f"tokens around the name, float ids, a temporal transformer over {FRAMES} frames",
                       token_ids=lambda m: m.prompt_learner.prompt_actiontoken,
                       temporal=lambda m, x: m.frames(x), temporal_kind="attention")


def prefix_postfix(clip, tok, names):
    return _target(seeded(PrefixPostfixVideo, clip, tok, names), clip, tok, names)


def prefix_postfix_frozen_device(clip, tok, names):
    model = seeded(PrefixPostfixVideo, clip, tok, names)
    model.prompt_learner = seeded(FrozenDevicePrompts, clip, tok, names)
    return _target(model, clip, tok, names)


def prefix_postfix_discarded_to(clip, tok, names):
    model = seeded(DiscardedToVideo, clip, tok, names)
    model.tokens()  # the first forward's state: the ids a plain attribute on the CPU
    return _target(model, clip, tok, names)
